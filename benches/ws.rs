//! WebSocket codec throughput (criterion, `Throughput::Bytes`): header parse, server frame
//! encode, unmask, and decoding a stream of masked 128-byte text frames.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringcast::codec::ws::{
    encode_frame, encode_frame_header, parse_frame_header, unmask, Decoder, Event, OpCode,
};
use std::hint::black_box;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame, as a browser sends it.
fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame_header(&mut out, true, opcode, payload.len() as u64);
    out[1] |= 0x80;
    out.extend_from_slice(&MASK);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], MASK, 0);
    out
}

fn header_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_header_parse");
    for (name, len) in [("7bit", 100usize), ("16bit", 1000), ("64bit", 100_000)] {
        let f = client_frame(OpCode::Binary, &vec![0; len]);
        let h = parse_frame_header(&f)
            .ok()
            .flatten()
            .map_or(0, |h| h.header_len);
        let header = &f[..h];
        g.throughput(Throughput::Bytes(header.len() as u64));
        g.bench_function(name, |b| b.iter(|| parse_frame_header(black_box(header))));
    }
    g.finish();
}

fn frame_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_frame_encode");
    for (name, len) in [("128B", 128usize), ("16KiB", 16 * 1024)] {
        let payload = vec![b'x'; len];
        let mut out = Vec::with_capacity(len + 16);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                encode_frame(&mut out, OpCode::Text, black_box(&payload));
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn unmask_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_unmask");
    for (name, len) in [("128B", 128usize), ("4KiB", 4096), ("1MiB", 1 << 20)] {
        let mut buf = vec![0x5a; len];
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| b.iter(|| unmask(black_box(&mut buf), MASK, 1)));
    }
    g.finish();
}

fn decode_stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_decode");
    let one = client_frame(OpCode::Text, &[b'a'; 128]);
    let stream: Vec<u8> = one.iter().copied().cycle().take(one.len() * 512).collect();
    let mut input = stream.clone();
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("masked_text_128B_x512", |b| {
        b.iter(|| {
            input.copy_from_slice(&stream);
            let mut d = Decoder::new(1 << 20);
            let (mut pos, mut messages) = (0, 0usize);
            while let Ok((n, ev)) = d.decode(&mut input[pos..]) {
                pos += n;
                match ev {
                    Some(Event::Message { .. }) => {
                        messages += black_box(d.message()).len();
                        d.clear_message();
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            messages
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    header_parse,
    frame_encode,
    unmask_bench,
    decode_stream
);
criterion_main!(benches);
