//! SSE writer throughput: `encode_event` for small (128 B) and page-sized (4 KiB) payloads, with
//! no line break (one `data:` line, the common case for JSON) and with a break every 32 bytes
//! (text streams). Each is reported in bytes/s and in events/s.
//!
//! `cargo bench --bench sse`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringcast::codec::sse::{encode_binary_event, encode_event};

fn payload(len: usize, line_breaks: bool) -> Vec<u8> {
    (0..len)
        .map(|i| {
            if line_breaks && i % 32 == 31 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

fn bench_encode(c: &mut Criterion) {
    let cases = [
        (128, false, "128B_flat"),
        (128, true, "128B_lines"),
        (4096, false, "4KiB_flat"),
        (4096, true, "4KiB_lines"),
    ];
    for (throughput_name, bytes) in [("bytes", true), ("events", false)] {
        let mut group = c.benchmark_group(format!("sse_encode_event/{throughput_name}"));
        for (len, lines, name) in cases {
            let data = payload(len, lines);
            group.throughput(if bytes {
                Throughput::Bytes(len as u64)
            } else {
                Throughput::Elements(1)
            });
            // The shard reuses its encode buffer, so the bench does too.
            let mut out = Vec::with_capacity(2 * len + 64);
            group.bench_with_input(BenchmarkId::from_parameter(name), &data, |b, data| {
                b.iter(|| {
                    out.clear();
                    encode_event(&mut out, b"3f9a:123456", Some(b"tick"), black_box(data));
                    black_box(out.len())
                })
            });
        }
        group.finish();
    }

    let mut group = c.benchmark_group("sse_encode_binary_event");
    for len in [128usize, 4096] {
        let data = payload(len, false);
        group.throughput(Throughput::Bytes(len as u64));
        let mut out = Vec::with_capacity(2 * len + 64);
        group.bench_with_input(BenchmarkId::from_parameter(len), &data, |b, data| {
            b.iter(|| {
                out.clear();
                encode_binary_event(&mut out, b"3f9a:123456", None, black_box(data));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
