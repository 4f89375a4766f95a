// Real-browser test of the status page (GET /status): Debian's headless Chromium, driven by
// playwright-core, opens the page while traffic runs and must see its figures move and its
// charts fill; screenshots at a phone's and a laptop's width are kept as test artifacts under
// target/browser-artifacts/ (status-390.png, status-1280.png).
//
// The node runs with --admin-loopback off and --admin-token, so the page is loaded the way a
// remote operator loads it: with ?token= (the page sends it on as a Bearer header to /stats).
// Only 127.0.0.1 is used. Every wait is bounded, and a watchdog bounds the whole run.
// Usage: node status.mjs   (env: RINGCAST_BIN, CHROMIUM, BROWSER_TEST_VERBOSE=1)
// Prints one summary line; exits 0 when it passes, 1 otherwise.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');
const RINGCAST = process.env.RINGCAST_BIN || path.join(ROOT, 'target', 'debug', 'ringcast');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'target', 'browser-artifacts');
const VERBOSE = process.env.BROWSER_TEST_VERBOSE === '1';
const TOKEN = 'status-page-admin-token';
const WATCHDOG_MS = 90_000;

const t0 = Date.now();
const say = (...a) => console.log(`[${((Date.now() - t0) / 1000).toFixed(2)}s]`, ...a);
const debug = (...a) => VERBOSE && say(...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Failure extends Error {}
function check(cond, msg) {
  if (!cond) throw new Failure(msg);
}

/** Polls `cond` every 50 ms until it is truthy or `ms` is over (then fails with `what`). */
async function until(what, ms, cond) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Failure(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

async function freePort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/** Publishes to `topic` every few milliseconds and holds two SSE subscribers, until stopped. */
function traffic(base, topic) {
  const ctl = new AbortController();
  const readers = [0, 1].map(async () => {
    try {
      const r = await fetch(`${base}/sse/${topic}`, { signal: ctl.signal });
      for await (const _ of r.body) if (ctl.signal.aborted) break;
    } catch {}
  });
  let published = 0;
  const pub = (async () => {
    while (!ctl.signal.aborted) {
      try {
        const r = await fetch(`${base}/pub/${topic}`, { method: 'POST', body: `tick ${published}`, signal: ctl.signal });
        if (r.ok) published++;
        await r.arrayBuffer();
      } catch {}
      await sleep(10);
    }
  })();
  return {
    get published() {
      return published;
    },
    async stop() {
      ctl.abort();
      await Promise.allSettled([pub, ...readers]);
    },
  };
}

const figure = (page, key) => page.locator(`[data-k="${key}"]`).textContent();
const number = (s) => {
  const m = /^([\d.]+)\s*(k|M)?/.exec(s ?? '');
  return m ? Number(m[1]) * (m[2] === 'k' ? 1e3 : m[2] === 'M' ? 1e6 : 1) : NaN;
};

async function main() {
  check(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install -y chromium)`);
  check(existsSync(RINGCAST), `no ringcast binary at ${RINGCAST}`);
  mkdirSync(ARTIFACTS, { recursive: true });
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const argv = ['--listen', `127.0.0.1:${port}`, '--shards', '2', '--admin-loopback', 'off', '--admin-token', TOKEN];
  const rc = spawn(RINGCAST, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  const log = [];
  rc.stderr.setEncoding('utf8').on('data', (d) => log.push(d));
  process.on('exit', () => rc.exitCode === null && rc.kill('SIGKILL'));
  const profile = mkdtempSync(path.join(os.tmpdir(), 'ringcast-chromium-status-'));
  let ctx;
  let load;
  try {
    await until('ringcast to answer /healthz', 10_000, async () => {
      check(rc.exitCode === null, `ringcast exited: ${log.join('')}`);
      return fetch(`${base}/healthz`).then((r) => r.ok, () => false);
    });
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      viewport: { width: 1280, height: 800 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    say(`chromium ${ctx.browser()?.version() ?? '?'}, ringcast on ${base}`);
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    const requests = [];
    page.on('request', (r) => requests.push(r.url()));

    // Without the token the page itself is refused (this loopback client counts as remote).
    const denied = await page.goto(`${base}/status`);
    check(denied.status() === 401, `/status without a token: ${denied.status()}`);

    load = traffic(base, 'status-load');
    const ok = await page.goto(`${base}/status?token=${TOKEN}`);
    check(ok.status() === 200, `/status with the token: ${ok.status()}`);
    await until('the page to be live', 10_000, async () => (await page.locator('#live').getAttribute('class')) === 'ok');
    // The figures move: deliveries/s above zero, the published total growing, two SSE streams.
    await until('deliveries/s above zero', 15_000, async () => number(await figure(page, 'deliveries_per_sec')) > 0);
    const first = number(await figure(page, 'published'));
    await until('the published total to grow', 10_000, async () => number(await figure(page, 'published')) > first);
    await until('two SSE streams', 10_000, async () => number(await figure(page, 'sse')) === 2);
    // The charts hold a line of several points.
    const points = await until('the deliveries chart to have points', 10_000, async () => {
      const p = await page.locator('#c-deliveries polyline').getAttribute('points').catch(() => null);
      const n = p ? p.trim().split(/\s+/).length : 0;
      return n >= 3 && n;
    });
    debug('deliveries chart points', points);
    const meta = await page.locator('#meta').textContent();
    check(/2 shards/.test(meta), `the header names the shards: ${meta}`);
    // Nothing but this node was asked for.
    const foreign = requests.filter((u) => !u.startsWith(base));
    check(foreign.length === 0, `requests elsewhere: ${foreign.join(', ')}`);

    const shots = [];
    for (const width of [1280, 390]) {
      await page.setViewportSize({ width, height: width > 800 ? 800 : 844 });
      await sleep(1200); // one more poll drawn at this width
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - innerWidth);
      check(overflow <= 0, `at ${width} px the page scrolls sideways by ${overflow} px`);
      const file = path.join(ARTIFACTS, `status-${width}.png`);
      await page.screenshot({ path: file, fullPage: true });
      check(statSync(file).size > 5000, `screenshot ${file} is empty`);
      shots.push(path.relative(ROOT, file));
    }
    const published = load.published;
    await load.stop();
    load = null;
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    console.log(`status: passed (figures moved under ${published} publishes, ${points} chart points, screenshots ${shots.join(' ')}) in ${secs}s`);
    return 0;
  } finally {
    await load?.stop();
    await ctx?.close().catch(() => {});
    rc.kill('SIGTERM');
    rmSync(profile, { recursive: true, force: true });
  }
}

const watchdog = setTimeout(() => {
  console.log(`status: FAILED (watchdog: the run took over ${WATCHDOG_MS / 1000}s)`);
  process.exit(1);
}, WATCHDOG_MS);
main()
  .then((code) => {
    clearTimeout(watchdog);
    process.exit(code);
  })
  .catch((e) => {
    console.log(`status: FAILED (${e instanceof Failure ? e.message : e.stack})`);
    process.exit(1);
  });
