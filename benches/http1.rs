//! Request-head parsing throughput: a typical browser GET (~400 B) and a small wrk-like head.
//! Run: `cargo bench --bench http1`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringcast::codec::http1::{parse_head, ChunkedDecoder, Head, Limits, Status};
use std::hint::black_box;

const BROWSER_GET: &[u8] = b"GET /sse/news?since=1718000000:42 HTTP/1.1\r\n\
Host: push.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/event-stream\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://app.example.com/dashboard\r\n\
Origin: https://app.example.com\r\n\
Connection: keep-alive\r\n\
Cookie: session=3f9a1c2e7b6d4a5f8e0c1b2a3d4e5f60; theme=dark\r\n\
Cache-Control: no-cache\r\n\r\n";

const WRK_GET: &[u8] = b"GET /poll/news HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

const CHUNKED: &[u8] = b"10\r\n0123456789abcdef\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\n\r\n";

fn bench_head(c: &mut Criterion, name: &str, buf: &'static [u8]) {
    let limits = Limits::default();
    let mut head = Head::default();
    let mut g = c.benchmark_group("parse_head");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(name, |b| {
        b.iter(|| {
            let r = parse_head(black_box(buf), &limits, &mut head);
            assert_eq!(r, Ok(Status::Complete));
        })
    });
    g.finish();
}

fn heads(c: &mut Criterion) {
    bench_head(c, "browser_get", BROWSER_GET);
    bench_head(c, "wrk_get", WRK_GET);
}

fn chunked(c: &mut Criterion) {
    let mut out = Vec::with_capacity(64);
    let mut g = c.benchmark_group("chunked");
    g.throughput(Throughput::Bytes(CHUNKED.len() as u64));
    g.bench_function("two_chunks", |b| {
        b.iter(|| {
            out.clear();
            let mut d = ChunkedDecoder::new(1 << 20);
            assert_eq!(
                d.decode(black_box(CHUNKED), &mut out),
                Ok((CHUNKED.len(), true))
            );
        })
    });
    g.finish();
}

criterion_group!(benches, heads, chunked);
criterion_main!(benches);
