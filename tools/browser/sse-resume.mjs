// Real-browser SSE test: Debian's headless Chromium, driven by playwright-core, opens an
// EventSource on a page and must see every published message exactly once, in order, across
//   (cut)     TCP connections cut under it while publishing goes on (FIN, RST, and in the middle
//             of an event): the browser reconnects by itself with Last-Event-ID and the server
//             replays exactly what it missed;
//   (restart) the server restarted on the same port (SIGTERM, then a new process): the topic has a
//             new epoch, so the browser's Last-Event-ID is stale and the page must get an explicit
//             `event: reset` carrying the current position, then only new messages;
//   (auth)    with a JWT key (HS256, tokens minted here with node's crypto from the secret file
//             run.sh writes): a cross-origin page publishes with fetch (JSON body to POST /pub,
//             Authorization: Bearer, so the browser sends a CORS preflight) and subscribes with
//             EventSource and ?token=; a token without the publish claim gets 403 in the page.
//   (multi)   one EventSource on /sse?topic=a&topic=b&topic=c (issue 16) cut several times while
//             all three publish, one topic's history trimmed meanwhile: every message once in
//             each topic's order, and only the trimmed topic gets `event: reset`.
//
// Only 127.0.0.1 is used. Every wait is bounded, and a watchdog bounds the whole run.
// Usage: node sse-resume.mjs   (env: RINGCAST_BIN, CHROMIUM, JWT_SECRET_FILE, BROWSER_TEST_VERBOSE=1)
// Prints one summary line; exits 0 when every scenario passes, 1 otherwise.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const RINGCAST = process.env.RINGCAST_BIN || path.join(ROOT, 'target', 'debug', 'ringcast');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const VERBOSE = process.env.BROWSER_TEST_VERBOSE === '1';
const RETRY_MS = 200;
const WATCHDOG_MS = 120_000;

const t0 = Date.now();
const say = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(2)}s]`, ...a);
const debug = (...a) => VERBOSE && say(...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}
function eq(actual, expected, msg) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  check(a === e, `${msg}: expected ${e}, got ${a}`);
}

/** Polls `cond` every 20 ms until it is truthy or `ms` is over (then fails with `what`). */
async function until(what, ms, cond) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Failure(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

function withTimeout(what, ms, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Failure(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

const parsePos = (p) => {
  const m = /^([^:]+):(\d+)$/.exec(p ?? '');
  check(m, `a position EPOCH:OFFSET, got ${JSON.stringify(p)}`);
  return { epoch: m[1], offset: Number(m[2]) };
};

// ---------------------------------------------------------------------------------------------
// ringcast

const children = new Set(); // ringcast processes, killed if this script exits early
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

class Ringcast {
  constructor(port, args) {
    this.port = port;
    this.args = args;
    this.log = [];
  }

  async start() {
    const argv = ['--listen', `127.0.0.1:${this.port}`, ...this.args];
    debug('ringcast', argv.join(' '));
    this.proc = spawn(RINGCAST, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(this.proc);
    this.exited = new Promise((r) => this.proc.once('exit', (code, sig) => r({ code, sig })));
    for (const s of [this.proc.stdout, this.proc.stderr]) {
      s.setEncoding('utf8');
      s.on('data', (d) => this.log.push(...d.split('\n').filter(Boolean)));
    }
    let dead = null;
    this.exited.then((x) => (dead = x));
    await until(`ringcast on port ${this.port} to answer /healthz`, 10_000, async () => {
      check(!dead, `ringcast exited at start (${JSON.stringify(dead)}): ${this.log.slice(-5).join(' | ')}`);
      try {
        const r = await fetch(`http://127.0.0.1:${this.port}/healthz`, { signal: AbortSignal.timeout(1000) });
        return r.ok;
      } catch {
        return false;
      }
    });
  }

  /** SIGTERM and wait for the drain to end (SIGKILL if it does not within `ms`). */
  async stop(ms = 10_000) {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    try {
      return await withTimeout('ringcast to drain and exit after SIGTERM', ms, this.exited);
    } catch (e) {
      this.proc.kill('SIGKILL');
      await withTimeout('ringcast to exit after SIGKILL', 5000, this.exited);
      throw e;
    }
  }

  kill() {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }

  async publish(topic, body) {
    const r = await fetch(`http://127.0.0.1:${this.port}/pub/${topic}`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'text/plain; charset=utf-8' },
      signal: AbortSignal.timeout(5000),
    });
    const text = await r.text();
    check(r.status === 200, `publish answered ${r.status}: ${text}`);
    return JSON.parse(text).id;
  }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy between the browser and ringcast: it can cut every open connection (FIN, RST, or
// in the middle of the next event) while ringcast keeps running, and it records every request
// head the browser sends (method, path, Last-Event-ID) and the last bytes each connection got.

class CutProxy {
  constructor(upstreamPort) {
    this.upstreamPort = upstreamPort;
    this.pairs = new Set();
    this.requests = []; // {conn, method, target, lastEventId}
    this.closed = []; // {conn, tail, how}
    this.accepted = 0;
    this.refused = 0;
    this.midCuts = 0;
    this.gateClosed = false; // while closed, connections are accepted and closed at once
    this.gated = 0;
    this.server = net.createServer((client) => this.#accept(client));
  }

  async listen() {
    await new Promise((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = this.server.address().port;
  }

  #accept(client) {
    if (this.gateClosed) {
      this.gated++;
      client.on('error', () => {});
      client.destroy();
      return;
    }
    const conn = ++this.accepted;
    const up = net.connect({ host: '127.0.0.1', port: this.upstreamPort });
    client.setNoDelay(true);
    up.setNoDelay(true);
    const pair = { conn, client, up, tail: '', cutMid: false, how: null };
    this.pairs.add(pair);
    let head = Buffer.alloc(0);
    let body = 0; // bytes of a request body (Content-Length) still to pass before the next head

    client.on('data', (d) => {
      head = Buffer.concat([head, d]);
      for (;;) {
        const skip = Math.min(body, head.length);
        head = head.subarray(skip);
        body -= skip;
        const i = head.indexOf('\r\n\r\n');
        if (body > 0 || i < 0) break;
        const lines = head.subarray(0, i).toString('latin1').split('\r\n');
        head = head.subarray(i + 4);
        const [method, target] = lines[0].split(' ');
        const h = Object.fromEntries(
          lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
        );
        body = Number(h['content-length'] ?? 0);
        this.requests.push({ conn, method, target, lastEventId: h['last-event-id'] ?? null, origin: h.origin ?? null });
        debug(`proxy conn ${conn}: ${method} ${target} Last-Event-ID=${h['last-event-id'] ?? '-'}`);
      }
      up.write(d);
    });
    up.on('data', (d) => {
      if (pair.cutMid) {
        // Deliver everything before the next event's data: line (so its id: line, at least,
        // reaches the browser), then close (FIN): the event is never completed, and the
        // browser must drop it and resume from the event before.
        // The event may start this chunk: a write of one event arrives as one chunk.
        const at = d.indexOf('\ndata:');
        const i = at >= 0 ? at : d.subarray(0, 5).toString() === 'data:' && pair.tail.endsWith('\n') ? -1 : -2;
        if (i >= -1 && pair.client.writable) {
          pair.client.write(d.subarray(0, i + 1));
          pair.tail = (pair.tail + d.subarray(0, i + 1).toString()).slice(-400);
          this.midCuts++;
          this.#kill(pair, 'mid-event');
          return;
        }
      }
      pair.tail = (pair.tail + d.toString()).slice(-400);
      client.write(d);
    });
    up.on('error', (e) => {
      if (e.code === 'ECONNREFUSED') this.refused++;
      pair.how ??= `upstream ${e.code}`;
      client.destroy();
    });
    up.on('end', () => {
      pair.how ??= 'upstream closed';
      client.end();
    });
    up.on('close', () => client.destroy());
    client.on('error', () => up.destroy());
    client.on('end', () => up.end());
    client.on('close', () => {
      up.destroy();
      if (this.pairs.delete(pair)) this.closed.push({ conn, tail: pair.tail, how: pair.how ?? 'client closed' });
    });
  }

  #kill(pair, how) {
    pair.how = how;
    if (how === 'fin' || how === 'mid-event') {
      pair.client.end();
      pair.up.destroy();
    } else {
      pair.client.resetAndDestroy();
      pair.up.destroy();
    }
  }

  /** Cuts every open connection now ('fin' or 'rst'), or in the middle of its next event ('mid-event'). */
  cut(how) {
    const open = [...this.pairs];
    for (const p of open) {
      if (how === 'mid-event') p.cutMid = true;
      else this.#kill(p, how);
    }
    return open.length;
  }

  sseRequests() {
    return this.requests.filter((r) => r.method === 'GET' && r.target.startsWith('/sse/'));
  }

  close() {
    for (const p of this.pairs) {
      p.client.destroy();
      p.up.destroy();
    }
    return new Promise((r) => this.server.close(r));
  }
}

// ---------------------------------------------------------------------------------------------
// The page: a real origin (http://127.0.0.1:PAGEPORT), with ringcast reached cross-origin
// through the proxy and `--allow-origin` set to this origin.

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ringcast SSE</title></head>
<body><pre id="out"></pre>
<script>
  window.seen = [];
  window.opens = 0;
  window.errors = 0;
  window.start = (url) => {
    const es = new EventSource(url);
    window.es = es;
    const note = (x) => { window.seen.push(x); document.getElementById('out').textContent += JSON.stringify(x) + '\\n'; };
    es.onopen = () => { window.opens++; note({ kind: 'open', at: Date.now() }); };
    es.onerror = () => { window.errors++; note({ kind: 'error', state: es.readyState, at: Date.now() }); };
    es.onmessage = (e) => note({ kind: 'message', id: e.lastEventId, data: e.data, origin: e.origin });
    es.addEventListener('reset', (e) => note({ kind: 'reset', id: e.lastEventId, data: e.data, origin: e.origin }));
  };
</script></body></html>`;

async function pageServer() {
  const srv = http.createServer((req, res) => {
    if (req.url === '/' || req.url.startsWith('/?')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(PAGE);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return { srv, origin: `http://127.0.0.1:${srv.address().port}` };
}

async function openPage(ctx, origin, sseUrl) {
  const page = await ctx.newPage();
  page.setDefaultTimeout(10_000);
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  await page.goto(`${origin}/`, { timeout: 10_000 });
  await page.evaluate((u) => window.start(u), sseUrl);
  const st = {
    page,
    consoleLines,
    seen: () => page.evaluate(() => window.seen),
    readyState: () => page.evaluate(() => window.es.readyState),
    messages: async () => (await st.seen()).filter((x) => x.kind === 'message'),
  };
  return st;
}

/** Fails at once if the EventSource gave up (readyState CLOSED: a non-200, a CORS refusal...). */
async function alive(p) {
  const rs = await p.readyState();
  check(rs !== 2, `the EventSource gave up (readyState CLOSED); console: ${p.consoleLines.slice(-5).join(' | ')}`);
}

// A payload mix the browser must rebuild exactly: plain, multi-line (\n), unicode.
const payload = (tag, n) =>
  n % 7 === 0 ? `${tag}-${n}\nsecond line of ${n}` : n % 5 === 0 ? `${tag}-${n} ünïcødé ✓ 🚀` : `${tag}-${n}`;

// ---------------------------------------------------------------------------------------------
// Scenario: connections cut under the browser, the server keeps its history.

async function scenarioCut(ctx, origin, stats) {
  const port = await freePort();
  const rc = new Ringcast(port, ['--sse-retry-ms', String(RETRY_MS), '--allow-origin', origin, '--drain-timeout-secs', '2']);
  const proxy = new CutProxy(port);
  const cleanup = [];
  try {
    await rc.start();
    await proxy.listen();
    const topic = 'browser-cut';
    const published = []; // [{id, data}]
    const pub = async (n) => published.push({ id: await rc.publish(topic, payload('c', n)), data: payload('c', n) });
    await pub(1);
    const { epoch } = parsePos(published[0].id);
    // Start from the topic's beginning (query parameter; reconnects send the header, which wins).
    const p = await openPage(ctx, origin, `http://127.0.0.1:${proxy.port}/sse/${topic}?last_event_id=${epoch}:0`);
    cleanup.push(() => p.page.close());
    await until('the EventSource to open', 10_000, async () => (await alive(p), (await p.page.evaluate(() => window.opens)) >= 1));

    // Publish all along, one message every 15 ms, in order (each publish awaited).
    let publishing = true;
    let pubErr = null;
    const publisher = (async () => {
      for (let n = 2; publishing; n++) {
        await pub(n);
        await sleep(15);
      }
    })().catch((e) => (pubErr = e));

    const cuts = ['fin', 'rst', 'mid-event', 'rst', 'fin', 'mid-event'];
    let opensWanted = 1;
    for (const how of cuts) {
      // Let some messages flow on the current connection first.
      const have = (await p.messages()).length;
      await until(`messages before the ${how} cut`, 10_000, async () => (await alive(p), (await p.messages()).length >= have + 8));
      const n = proxy.cut(how);
      check(n === 1, `one browser connection open at the ${how} cut, found ${n}`);
      opensWanted++;
      await until(`the browser to reconnect by itself after the ${how} cut`, 10_000, async () => {
        await alive(p);
        return (await p.page.evaluate(() => window.opens)) >= opensWanted;
      });
      debug(`cut ${how}: reconnected`);
    }
    const afterLast = (await p.messages()).length;
    await until('messages after the last reconnect', 10_000, async () => (await alive(p), (await p.messages()).length >= afterLast + 10));
    publishing = false;
    await withTimeout('the publisher to stop', 10_000, publisher);
    check(!pubErr, `publishing failed: ${pubErr}`);
    // Bounded wait for all of them; on a timeout the comparison below says what is missing.
    await until(`all ${published.length} messages in the page`, 10_000, async () => (await p.messages()).length >= published.length).catch(
      (e) => say(`cut: ${e.message}`),
    );
    await sleep(300); // nothing more may arrive: a duplicate after the last message would show here

    const seen = await p.seen();
    const got = seen.filter((x) => x.kind === 'message').map(({ id, data }) => ({ id, data }));
    check(!seen.some((x) => x.kind === 'reset'), `no reset while the history holds the resume point: ${JSON.stringify(seen.filter((x) => x.kind === 'reset'))}`);
    // Exactly once, in order, no gap: the page's list is the publish list.
    if (JSON.stringify(got) !== JSON.stringify(published)) {
      const ids = got.map((x) => x.id);
      const dups = ids.filter((id, i) => ids.indexOf(id) !== i);
      const missing = published.filter((x) => !ids.includes(x.id)).map((x) => x.id);
      const firstDiff = got.findIndex((x, i) => JSON.stringify(x) !== JSON.stringify(published[i]));
      throw new Failure(
        `page got ${got.length} messages, published ${published.length}; duplicates ${JSON.stringify(dups)}, missing ${JSON.stringify(missing)}, first difference at #${firstDiff}: got ${JSON.stringify(got[firstDiff])} want ${JSON.stringify(published[firstDiff])}`,
      );
    }
    check(got.every((x) => parsePos(x.id).epoch === epoch), 'one epoch throughout');

    // Each reconnect carried Last-Event-ID = the id of the last event the page had dispatched
    // before the cut (for a mid-event cut: not the id of the half-received event).
    const sse = proxy.sseRequests();
    eq(sse.length, cuts.length + 1, 'SSE requests the browser made (first + one per cut)');
    eq(proxy.requests.length, sse.length, 'requests through the proxy (all SSE GETs: no preflight)');
    check(sse[0].lastEventId === null, `the first request has no Last-Event-ID, got ${sse[0].lastEventId}`);
    check(sse.every((r) => r.origin === origin), `every request carries Origin ${origin}`);
    let k = 0;
    let lastId = null;
    for (const x of seen) {
      if (x.kind === 'message') lastId = x.id;
      if (x.kind === 'error') {
        k++;
        eq(sse[k].lastEventId, lastId, `Last-Event-ID sent on reconnect ${k} (after the ${cuts[k - 1]} cut)`);
      }
    }
    eq(k, cuts.length, 'error events seen by the page (one per cut)');
    eq(proxy.midCuts, 2, 'cuts made in the middle of an event');

    stats.events += got.length;
    stats.reconnects += k;
    return `cut: ${got.length} messages exactly once in order across ${cuts.length} cuts (${cuts.join(', ')})`;
  } finally {
    for (const f of cleanup) await f().catch(() => {});
    await proxy.close();
    await rc.stop().catch(() => rc.kill());
  }
}

// ---------------------------------------------------------------------------------------------
// Scenario: the server restarted on the same port; the topic comes back with a new epoch.

async function scenarioRestart(ctx, origin, stats) {
  const port = await freePort();
  const args = ['--sse-retry-ms', String(RETRY_MS), '--allow-origin', origin, '--drain-timeout-secs', '2'];
  const proxy = new CutProxy(port);
  let rc = new Ringcast(port, args);
  const cleanup = [];
  try {
    await rc.start();
    await proxy.listen();
    const topic = 'browser-restart';
    const before = [];
    for (let n = 1; n <= 10; n++) before.push({ id: await rc.publish(topic, payload('a', n)), data: payload('a', n) });
    const e1 = parsePos(before[0].id).epoch;
    const p = await openPage(ctx, origin, `http://127.0.0.1:${proxy.port}/sse/${topic}?last_event_id=${e1}:0`);
    cleanup.push(() => p.page.close());
    await until('the 10 messages before the restart', 10_000, async () => (await alive(p), (await p.messages()).length >= 10));

    // Restart: SIGTERM (the stream gets a final retry: and is closed), then no node at all for
    // a second (the browser's attempts are refused and it must keep trying), then a new process.
    const exit = await rc.stop();
    debug('ringcast stopped', exit);
    const drained = proxy.closed.find((c) => c.conn === proxy.sseRequests()[0].conn);
    check(drained && /\nretry: \d+\n/.test(drained.tail), `the drained stream ended with a retry: line, got ${JSON.stringify(drained?.tail.slice(-80))}`);
    await sleep(1000);
    check(proxy.refused >= 2, `the browser kept trying while no node listened (${proxy.refused} refused attempts)`);
    await alive(p);
    // Keep the browser out until the new node has messages, so the reset position is known.
    proxy.gateClosed = true;
    rc = new Ringcast(port, args);
    await rc.start();
    const after = [];
    const pubAfter = async (n) => after.push({ id: await rc.publish(topic, payload('b', n)), data: payload('b', n) });
    for (let n = 1; n <= 3; n++) await pubAfter(n);
    proxy.gateClosed = false;
    await until('the reset event on the page', 10_000, async () => (await alive(p), (await p.seen()).some((x) => x.kind === 'reset')));
    for (let n = 4; n <= 10; n++) await pubAfter(n);
    const e2 = parsePos(after[0].id).epoch;
    check(e2 !== e1, `a restarted node gives the topic a new epoch (${e1} before, ${e2} after)`);

    await until('the messages published after the reset', 10_000, async () => {
      const m = await p.messages();
      return m.length && m[m.length - 1].id === after[after.length - 1].id;
    });
    await sleep(300);

    const seen = await p.seen();
    const resets = seen.filter((x) => x.kind === 'reset');
    eq(resets.length, 1, 'reset events');
    const reset = resets[0];
    const rpos = parsePos(reset.data);
    eq(reset.id, reset.data, "the reset's id (the browser's next Last-Event-ID) is its data, the current position");
    eq(reset.data, after[2].id, 'the reset carries the current position of the new node (its 3rd message)');
    const ri = seen.indexOf(reset);
    const msgs = (xs) => xs.filter((x) => x.kind === 'message').map(({ id, data }) => ({ id, data }));
    // Before the reset: exactly the old epoch's messages. After it: exactly the new epoch's
    // messages past the reset position, in order; nothing at or before it (no silent replay,
    // no silent gap: whatever the page did not get is announced by the reset).
    eq(msgs(seen.slice(0, ri)), before, 'messages before the restart');
    eq(msgs(seen.slice(ri + 1)), after.filter((x) => parsePos(x.id).offset > rpos.offset), 'messages after the reset');
    eq(msgs(seen.slice(ri + 1)), after.slice(3), 'messages after the reset: exactly those published after it');

    // The browser came back with its old-epoch Last-Event-ID (every attempt, including any
    // refused while no node listened), and the one that reached the new node was answered reset.
    const sse = proxy.sseRequests();
    check(sse.length >= 2, `the browser reconnected (${sse.length} SSE requests)`);
    for (const r of sse.slice(1)) eq(r.lastEventId, before[before.length - 1].id, `Last-Event-ID on reconnect (conn ${r.conn})`);
    eq(seen.filter((x) => x.kind === 'open').length, 2, 'opens (first connection + the one to the new node)');

    stats.events += msgs(seen).length;
    stats.reconnects += 1;
    stats.resets += 1;
    return `restart: epoch ${e1} -> ${e2}, reset to ${reset.data}; ${proxy.refused} attempts refused while no node listened, ${proxy.gated} held off, then ${msgs(seen.slice(ri + 1)).length} new messages after the reset`;
  } finally {
    for (const f of cleanup) await f().catch(() => {});
    await proxy.close();
    await rc.stop().catch(() => rc.kill());
  }
}


// ---------------------------------------------------------------------------------------------
// Scenario: tokens. ringcast runs with --jwt-secret-file; the page holds tokens minted here.

/** An HS256 JWT of `claims`, signed with `secret` (bytes): what a backend would mint. */
function mintHs256(secret, claims) {
  const b64 = (x) => Buffer.from(JSON.stringify(x)).toString('base64url');
  const signing = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${signing}.${createHmac('sha256', secret).update(signing).digest('base64url')}`;
}

/** The secret file run.sh wrote (JWT_SECRET_FILE), or one written here when run alone. */
function secretFile(dir) {
  if (process.env.JWT_SECRET_FILE) return process.env.JWT_SECRET_FILE;
  const f = path.join(dir, 'jwt.secret');
  writeFileSync(f, randomBytes(48).toString('base64') + '\n');
  return f;
}

async function scenarioAuth(ctx, origin, stats, dir) {
  const file = secretFile(dir);
  // ringcast drops one trailing line break from the file; so does this.
  const secret = readFileSync(file).toString('latin1').replace(/\r?\n$/, '');
  const port = await freePort();
  const rc = new Ringcast(port, ['--jwt-secret-file', file, '--allow-origin', origin, '--drain-timeout-secs', '2']);
  const proxy = new CutProxy(port);
  const cleanup = [];
  try {
    await rc.start();
    await proxy.listen();
    const topic = 'browser-auth/news';
    const exp = Math.floor(Date.now() / 1000) + 600;
    const reader = mintHs256(secret, { exp, sub: 'browser-reader', topics: ['browser-auth/*'] });
    const writer = mintHs256(secret, { exp, sub: 'browser-writer', publish: ['browser-auth/*'] });
    const base = `http://127.0.0.1:${proxy.port}`;
    const p = await openPage(ctx, origin, `${base}/sse/${topic}?token=${reader}`);
    cleanup.push(() => p.page.close());
    await until('the EventSource with ?token= to open', 10_000, async () => (await alive(p), (await p.page.evaluate(() => window.opens)) >= 1));

    // Publish from the page: fetch, JSON body to POST /pub, Authorization: Bearer.
    const publish = (token, data) =>
      p.page.evaluate(
        async ([url, token, body]) => {
          try {
            const r = await fetch(url, {
              method: 'POST',
              headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
              body,
            });
            return { status: r.status, text: await r.text() };
          } catch (e) {
            return { status: 0, text: String(e) };
          }
        },
        [`${base}/pub`, token, JSON.stringify([{ topic, data }])],
      );
    const published = [];
    for (let n = 1; n <= 5; n++) {
      const data = payload('t', n);
      const r = await publish(writer, data);
      eq(r.status, 200, `the page's publish ${n} (${r.text})`);
      const { ids } = JSON.parse(r.text);
      eq(ids.length, 1, 'ids in the answer');
      published.push({ id: ids[0], data });
    }
    // A token that may read but not publish: the page sees the 403 (a CORS-readable answer).
    const refused = await publish(reader, 'not allowed');
    eq(refused.status, 403, `a token without the publish claim (${refused.text})`);

    await until('the 5 published messages in the page', 10_000, async () => (await alive(p), (await p.messages()).length >= 5));
    await sleep(300); // the refused message must not arrive: it would show here
    const got = (await p.messages()).map(({ id, data }) => ({ id, data }));
    eq(got, published, 'messages the page received over EventSource');

    // What the browser sent: the EventSource carried ?token= (it cannot set headers); each
    // publish with Authorization was preceded by a CORS preflight, all from the page's origin.
    const sse = proxy.sseRequests();
    check(sse.length === 1 && sse[0].target.includes('token='), `one EventSource request with ?token=: ${JSON.stringify(sse.map((r) => r.target.slice(0, 40)))}`);
    const preflights = proxy.requests.filter((r) => r.method === 'OPTIONS' && r.target === '/pub');
    check(preflights.length >= 1, `a CORS preflight for POST /pub (requests: ${JSON.stringify(proxy.requests.map((r) => `${r.method} ${r.target.slice(0, 30)}`))})`);
    const posts = proxy.requests.filter((r) => r.method === 'POST' && r.target === '/pub');
    eq(posts.length, 6, 'POST /pub requests (5 allowed, 1 refused)');
    check(proxy.requests.every((r) => r.origin === origin), `every request carries Origin ${origin}`);
    // And no token reached the log (the server logs URLs with the token redacted).
    check(
      !rc.log.some((l) => [reader, writer].some((t) => l.includes(t.split('.')[2]))),
      'no token signature in the server log',
    );

    stats.events += got.length;
    return `auth: ${got.length} messages published by fetch (JSON, Bearer, ${preflights.length} preflight) received by EventSource ?token=; publish without the claim → 403`;
  } finally {
    for (const f of cleanup) await f().catch(() => {});
    await proxy.close();
    await rc.stop().catch(() => rc.kill());
  }
}
// ---------------------------------------------------------------------------------------------
// Scenario (issue 16): one EventSource on three topics, homed on both shards of a two-shard node,
// cut several times while all three publish; while the browser is held off once, one topic's
// history is trimmed (more messages than --history-messages): only that topic resets.

/** FNV-1a 64, as ringcast homes topics: `fnv(t) % shards`. */
const fnv = (t) => {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(t)) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return h;
};

async function scenarioMulti(ctx, origin, stats) {
  const port = await freePort();
  const HISTORY = 40;
  const args = ['--shards', '2', '--history-messages', String(HISTORY), '--sse-retry-ms', String(RETRY_MS), '--allow-origin', origin, '--drain-timeout-secs', '2'];
  const rc = new Ringcast(port, args);
  const proxy = new CutProxy(port);
  const cleanup = [];
  try {
    await rc.start();
    await proxy.listen();
    // Three topics, alternating between the two shards' homes.
    const topics = [];
    for (let i = 0; topics.length < 3; i++) if (fnv(`multi-${i}`) % 2n === BigInt(topics.length % 2)) topics.push(`multi-${i}`);
    const [ta, tb, tc] = topics;
    const published = new Map(topics.map((t) => [t, []])); // topic -> [{id, data}]
    const pub = async (t, n) => published.get(t).push({ id: await rc.publish(t, payload(t, n)), data: payload(t, n) });
    const url = `http://127.0.0.1:${proxy.port}/sse?${topics.map((t) => `topic=${t}`).join('&')}`;
    const p = await openPage(ctx, origin, url);
    cleanup.push(() => p.page.close());
    // Subscribed once the stream's position (an id: with no data) names every topic; messages
    // published before that would start the topics from later on.
    await until('the EventSource to open', 10_000, async () => (await alive(p), (await p.page.evaluate(() => window.opens)) >= 1));
    await until('the stream position line', 10_000, async () => [...proxy.pairs].some((x) => /\n\nid: s1\.[\w-]+\n\n/.test(x.tail)));

    let publishing = true;
    let pubErr = null;
    const publisher = (async () => {
      for (let n = 1; publishing; n++) {
        for (const t of topics) await pub(t, n);
        await sleep(10);
      }
    })().catch((e) => (pubErr = e));

    const cuts = ['fin', 'rst', 'mid-event', 'trim', 'fin', 'mid-event'];
    let opensWanted = 1;
    let trimmedAt = null;
    for (const how of cuts) {
      const have = (await p.messages()).length;
      await until(`messages before the ${how} cut`, 10_000, async () => (await alive(p), (await p.messages()).length >= have + 9));
      if (how === 'trim') {
        // Hold the browser off, trim one topic's history under it, then let it back.
        proxy.gateClosed = true;
        check(proxy.cut('fin') === 1, 'one browser connection open at the trim');
        for (let n = 0; n < HISTORY + 10; n++) await pub(tc, 100_000 + n);
        trimmedAt = published.get(tc).length;
        proxy.gateClosed = false;
      } else {
        check(proxy.cut(how) === 1, `one browser connection open at the ${how} cut`);
      }
      opensWanted++;
      await until(`the browser to reconnect after the ${how} cut`, 10_000, async () => (await alive(p), (await p.page.evaluate(() => window.opens)) >= opensWanted));
    }
    const after = (await p.messages()).length;
    await until('messages after the last reconnect', 10_000, async () => (await alive(p), (await p.messages()).length >= after + 12));
    publishing = false;
    await withTimeout('the publisher to stop', 10_000, publisher);
    check(!pubErr, `publishing failed: ${pubErr}`);
    const lastOf = new Map(topics.map((t) => [t, published.get(t).at(-1).id]));
    await until('every topic up to its last message', 10_000, async () => {
      const got = (await p.messages()).map((m) => JSON.parse(m.data));
      return topics.every((t) => got.some((e) => e.topic === t && e.id === lastOf.get(t)));
    }).catch((e) => say(`multi: ${e.message}`));
    await sleep(300); // a duplicate after the last message would show here

    const seen = await p.seen();
    const envs = seen.filter((x) => x.kind === 'message' || x.kind === 'reset').map((x) => ({ kind: x.kind, lastEventId: x.id, ...JSON.parse(x.data) }));
    check(envs.every((e) => e.lastEventId.startsWith('s1.')), 'every event id is a stream position');
    check(envs.every((e) => (e.kind === 'message' ? e.type === 'message' : e.type === 'reset')), 'envelope types match the event types');
    const resets = envs.filter((e) => e.kind === 'reset');
    eq(resets.map((e) => e.topic), [tc], 'only the trimmed topic resets, once');
    for (const t of topics) {
      const got = envs.filter((e) => e.topic === t);
      const msgs = got.filter((e) => e.kind === 'message').map(({ id, data }) => ({ id, data }));
      const want = published.get(t);
      if (t !== tc) {
        eq(msgs, want, `${t}: every message once, in order`);
        continue;
      }
      // The trimmed topic: a prefix in order, the reset at the current position, then exactly
      // what was published after it.
      const ri = got.findIndex((e) => e.kind === 'reset');
      const r = parsePos(got[ri].id).offset;
      check(r >= parsePos(want[trimmedAt - 1].id).offset, `the reset is at or after the trim (${got[ri].id})`);
      const before = got.slice(0, ri).map(({ id, data }) => ({ id, data }));
      eq(before, want.slice(0, before.length), `${t}: before the reset, in order`);
      const afterReset = got.slice(ri + 1).map(({ id, data }) => ({ id, data }));
      eq(afterReset, want.filter((x) => parsePos(x.id).offset > r), `${t}: exactly what came after the reset`);
    }
    // Every reconnect carried the last stream position the page saw.
    const sse = proxy.requests.filter((r) => r.method === 'GET' && r.target.startsWith('/sse?'));
    check(sse.length >= cuts.length + 1, `SSE requests: ${sse.length}`);
    check(sse.slice(1).every((r) => r.lastEventId?.startsWith('s1.')), 'reconnects send the stream position');
    stats.events += envs.length;
    stats.reconnects += cuts.length;
    stats.resets += resets.length;
    return `multi: ${envs.length - resets.length} messages on 3 topics (both shards) exactly once in each topic's order across ${cuts.length} cuts (${cuts.join(', ')}); only the trimmed topic reset`;
  } finally {
    for (const f of cleanup) await f().catch(() => {});
    await proxy.close();
    await rc.stop().catch(() => rc.kill());
  }
}

// ---------------------------------------------------------------------------------------------

const SCENARIOS = [
  ['cut', scenarioCut],
  ['restart', scenarioRestart],
  ['auth', scenarioAuth],
  ['multi', scenarioMulti],
];

async function main() {
  check(existsSync(RINGCAST), `no ringcast binary at ${RINGCAST} (cargo build first)`);
  check(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install -y chromium)`);
  const profile = mkdtempSync(path.join(os.tmpdir(), 'ringcast-chromium-'));
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'ringcast-browser-'));
  const { srv, origin } = await pageServer();
  let ctx;
  const stats = { events: 0, reconnects: 0, resets: 0 };
  const results = [];
  let failed = null;
  try {
    // launchPersistentContext is how Playwright takes a --user-data-dir: a fresh, empty one.
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    const version = ctx.browser()?.version() ?? '?';
    say(`chromium ${version}, page origin ${origin}`);
    for (const [name, run] of SCENARIOS) {
      const s = Date.now();
      try {
        const line = await run(ctx, origin, stats, scratch);
        say(`PASS ${line} (${((Date.now() - s) / 1000).toFixed(1)}s)`);
        results.push(name);
      } catch (e) {
        say(`FAIL ${name}: ${e instanceof Failure ? e.message : e.stack}`);
        failed ??= name;
      }
    }
  } finally {
    await ctx?.close().catch(() => {});
    await new Promise((r) => srv.close(r));
    rmSync(profile, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  }
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  if (failed) {
    console.log(`browser: FAILED (${results.length} of ${SCENARIOS.length} scenarios passed; first failure: ${failed}) in ${secs}s`);
    return 1;
  }
  console.log(
    `browser: ${SCENARIOS.length} scenarios passed (received ${stats.events} events, ${stats.reconnects} reconnects, ${stats.resets} reset) in ${secs}s`,
  );
  return 0;
}

const watchdog = setTimeout(() => {
  console.log(`browser: FAILED (watchdog: the run took over ${WATCHDOG_MS / 1000}s)`);
  process.exit(1);
}, WATCHDOG_MS);
main()
  .then((code) => {
    clearTimeout(watchdog);
    process.exit(code);
  })
  .catch((e) => {
    console.log(`browser: FAILED (${e instanceof Failure ? e.message : e.stack})`);
    process.exit(1);
  });
