// The machine's floor for publish -> server -> subscriber at idle: two wake-ups over loopback
// TCP at 100 messages/s. One thread writes 8 bytes at each due time (clock_nanosleep, 1 ns timer
// slack), a second echoes them to a third, which records receive time - due time.
// Build and run: cc -O2 -o /tmp/hop tools/bench/hop.c -lpthread && /tmp/hop [N] [PIN]
// (PIN=1: the threads on alternate cores, as pinned shards are.)
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/prctl.h>
static int N = 1000; static double RATE = 100;
static long long now_ns(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000LL+t.tv_nsec;}
static void pair(int fds[2]){
  int l=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_addr.s_addr=htonl(0x7f000001);
  bind(l,(void*)&a,sizeof a); listen(l,1); socklen_t n=sizeof a; getsockname(l,(void*)&a,&n);
  int c=socket(AF_INET,SOCK_STREAM,0); connect(c,(void*)&a,sizeof a); int s=accept(l,0,0); close(l);
  int one=1; setsockopt(c,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one); setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);
  fds[0]=c; fds[1]=s;}
static int ab[2], bc[2]; static long long *lat;
static int PIN=0; static void pin(int c){ if(!PIN) return; cpu_set_t s; CPU_ZERO(&s); CPU_SET(c,&s); pthread_setaffinity_np(pthread_self(),sizeof s,&s);}
static void *B(void*x){pin(1);long long d; for(int i=0;i<N;i++){ if(read(ab[1],&d,8)!=8) exit(1); write(bc[0],&d,8);} return 0;}
static void *C(void*x){pin(0);long long d; for(int i=0;i<N;i++){ if(read(bc[1],&d,8)!=8) exit(1); lat[i]=now_ns()-d;} return 0;}
static int cmp(const void*a,const void*b){long long x=*(long long*)a,y=*(long long*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){ if(argc>1) N=atoi(argv[1]); if(argc>2) PIN=atoi(argv[2]); pin(0);
  prctl(PR_SET_TIMERSLACK,1,0,0,0);
  lat=calloc(N,8); pair(ab); pair(bc); pthread_t b,c; pthread_create(&b,0,B,0); pthread_create(&c,0,C,0);
  long long t0=now_ns()+100000000LL;
  for(int i=0;i<N;i++){ long long due=t0+(long long)(i*1e9/RATE); struct timespec ts={due/1000000000LL,due%1000000000LL};
    clock_nanosleep(CLOCK_MONOTONIC,TIMER_ABSTIME,&ts,0); write(ab[0],&due,8);}
  pthread_join(c,0); qsort(lat,N,8,cmp);
  printf("n=%d p50=%.3f p90=%.3f p99=%.3f p999=%.3f max=%.3f ms\n",N,lat[N/2]/1e6,lat[N*9/10]/1e6,lat[N*99/100]/1e6,lat[N*999/1000]/1e6,lat[N-1]/1e6);
}
