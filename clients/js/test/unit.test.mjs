// Unit tests of the client's pure parts: positions, stream-position tokens, backoff and server
// hints, SSE parsing, JWT expiry. No dependency: `node --test test/` (Node >= 18).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoff, classify, decodeStreamPos, delayFor, encodeStreamPos, jwtExp, parsePos, sseParser, tag } from '../ringcast.js';

test('positions parse strictly (src/codec/position.rs)', () => {
  assert.deepEqual(parsePos('3f9a1c07b2e4:17'), [0x3f9a1c07b2e4n, 17n]);
  assert.deepEqual(parsePos('ffffffffffffffff:18446744073709551615'), [(1n << 64n) - 1n, 18446744073709551615n]);
  for (const bad of [null, undefined, '', 'a', ':1', 'a:', 'A:1', '0xa:1', 'a:-1', 'a: 1', 'g:1', 'a:1:2', '12345678901234567:1', 'a:123456789012345678901']) {
    assert.equal(parsePos(bad), null, String(bad));
  }
});

test('classify: next, duplicate, gap, other epoch', () => {
  const table = [
    [null, 'a:5', 1], // no position yet: take it
    ['a:4', 'a:5', 1],
    ['a:5', 'a:5', 0],
    ['a:5', 'a:3', 0],
    ['a:5', 'a:7', 2], // a skipped offset
    ['a:5', 'b:6', 2], // another epoch without a reset
    ['a:5', 'junk', 2],
    ['a:9', 'a:10', 1], // numeric, not string, order
    ['a:18446744073709551614', 'a:18446744073709551615', 1], // past 2^53
  ];
  for (const [pos, id, want] of table) assert.equal(classify(pos, id), want, `${pos} then ${id}`);
});

// The vectors below are the Rust codec's own (src/codec/streampos.rs), so the client's tokens are
// the server's byte for byte: FNV-1a 64 tags, tags sorted, LEB128 varints, unpadded base64url.
test('tags are FNV-1a 64', () => {
  assert.equal(tag(''), 0xcbf29ce484222325n);
  assert.equal(tag('a'), 0xaf63dc4c8601ec8cn); // the published FNV-1a 64 vector for "a"
  assert.equal(tag('foobar'), 0x85944171f73967e8n);
});

test('stream positions round-trip, whatever the topic order', () => {
  const e = [
    ['a', '1f2e3d4c5b6a7988:7'],
    ['chat/42', '1:0'],
    ['b', 'ffffffffffffffff:18446744073709551615'],
  ];
  const t = encodeStreamPos(e);
  assert.match(t, /^s1\.[A-Za-z0-9_-]+$/);
  assert.equal(encodeStreamPos([...e].reverse()), t, 'one token per set of positions');
  const m = decodeStreamPos(t);
  assert.equal(m.size, 3);
  for (const [topic, pos] of e) assert.equal(m.get(tag(topic)), pos, topic);
  assert.equal(m.get(tag('c')), undefined);
  // A topic twice, or without a readable position, is entered once / not at all.
  assert.equal(encodeStreamPos([['a', '5:6'], ['a', '5:6'], ['z', 'junk']]), encodeStreamPos([['a', '5:6']]));
  assert.equal(decodeStreamPos(encodeStreamPos([])).size, 0);
});

test('a stream position is the bytes the server writes', () => {
  // Built by hand: tag("a") LE, epoch 5, offset 300 (LEB128 ac 02).
  const raw = [...Array(8)].map((_, i) => Number((tag('a') >> BigInt(8 * i)) & 255n)).concat([5, 0xac, 0x02]);
  const want = 's1.' + Buffer.from(raw).toString('base64url');
  assert.equal(encodeStreamPos([['a', '5:300']]), want);
  assert.equal(decodeStreamPos(want).get(tag('a')), '5:300');
});

test('malformed stream positions place nothing', () => {
  const good = encodeStreamPos([['a', '5:6'], ['b', '7:8']]);
  for (const bad of ['', 's1', 's2.AAAA', '5:6', 's1.!!!!', 's1.AAAA', 's1.' + Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, ...Array(11).fill(0x80)]).toString('base64url')]) {
    assert.equal(decodeStreamPos(bad), null, bad);
  }
  // Every cut of a good token either still decodes (fewer entries) or is refused.
  for (let cut = 4; cut < good.length; cut++) {
    const m = decodeStreamPos(good.slice(0, cut));
    if (m) assert.ok(m.size < 2, good.slice(0, cut));
  }
});

test('backoff: full jitter, bounded', () => {
  const o = { minDelayMs: 500, maxDelayMs: 30000, drainMs: 2000 };
  assert.equal(backoff(0, 500, 30000, () => 0), 0);
  assert.equal(backoff(0, 500, 30000, () => 0.999999), 499.9995);
  assert.equal(backoff(3, 500, 30000, () => 0.5), 2000);
  assert.equal(backoff(6, 500, 30000, () => 1), 30000, 'capped: 500 * 2^6 = 32000 > 30000');
  assert.equal(backoff(1000, 500, 30000, () => 1), 30000, 'no overflow past the cap');
  // Uniform over [0, cap): 2000 draws spread across the range, never past it.
  for (const fails of [0, 2, 10]) {
    const cap = Math.min(30000, 500 * 2 ** fails);
    const xs = Array.from({ length: 2000 }, () => delayFor({}, fails, o));
    assert.ok(xs.every((x) => x >= 0 && x < cap), `fails=${fails}`);
    assert.ok(Math.min(...xs) < cap * 0.05 && Math.max(...xs) > cap * 0.95, `spread at fails=${fails}`);
    const mean = xs.reduce((a, b) => a + b) / xs.length;
    assert.ok(Math.abs(mean - cap / 2) < cap * 0.05, `mean ${mean} near ${cap / 2}`);
  }
});

test('server hints: drain, reset, token expired, SSE retry', () => {
  const o = { minDelayMs: 500, maxDelayMs: 30000, drainMs: 2000 };
  for (const code of [1001, 1012]) {
    assert.equal(delayFor({ code }, 5, o, () => 0), 1000);
    assert.equal(delayFor({ code }, 5, o, () => 0.999), 2998);
    const xs = Array.from({ length: 500 }, () => delayFor({ code }, 0, o));
    assert.ok(xs.every((x) => x >= 1000 && x < 3000), 'drain: 0.5–1.5× drainMs, whatever the failures');
    assert.ok(new Set(xs).size > 400, 'drain delays are jittered');
  }
  assert.equal(delayFor({ code: 4000 }, 7, o, () => 1), 0, 'reset: reconnect at once');
  assert.equal(delayFor({ code: 4001 }, 7, { ...o, getToken() {} }, () => 1), 0, 'expired, with getToken: at once');
  assert.equal(delayFor({ code: 4001 }, 1, o, () => 1), 1000, 'expired, no getToken: back off');
  assert.equal(delayFor({ retry: 3000 }, 0, o, () => 1), 3000, 'retry: is a floor');
  assert.equal(delayFor({ retry: 3000 }, 6, o, () => 1), 30000, 'backoff past retry:');
  assert.equal(delayFor({ code: 1006 }, 2, o, () => 0.5), 1000);
});

test('SSE parsing: fields, multi-line data, CRLF, chunk boundaries, retry, comments', () => {
  const text = ': ok\n\nretry: 3000\n\nid: s1.AAA\ndata: {"a":1}\n\nevent: reset\r\nid: 1:2\r\ndata: x\r\ndata:y\r\n\r\n: hb\n\nid: lone\n\ndata\n\n';
  const want = [
    { retry: 3000 },
    { event: 'message', data: '{"a":1}', id: 's1.AAA' },
    { event: 'reset', data: 'x\ny', id: '1:2' },
    { event: 'message', data: null, id: 'lone' },
    { event: 'message', data: '', id: null },
  ];
  // Fed whole, and fed one character at a time.
  for (const step of [text.length, 1, 7]) {
    const got = [];
    const feed = sseParser((e) => got.push(e));
    for (let i = 0; i < text.length; i += step) feed(text.slice(i, i + step));
    assert.deepEqual(got, want, `chunks of ${step}`);
  }
  // An unfinished block is not dispatched.
  const got = [];
  sseParser((e) => got.push(e))('id: 5\ndata: half');
  assert.deepEqual(got, []);
});

test('JWT expiry', () => {
  const jwt = (claims) => ['e30', Buffer.from(JSON.stringify(claims)).toString('base64url'), 'sig'].join('.');
  assert.equal(jwtExp(jwt({ exp: 1700000000, sub: 'ü' })), 1700000000000);
  assert.ok(!(jwtExp(jwt({ sub: 'x' })) > 0));
  for (const t of [undefined, '', 'opaque-token', 'a.b.c', 'a.!!.c']) assert.ok(!(jwtExp(t) > 0), String(t));
});
