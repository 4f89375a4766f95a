// ringcast browser client: every subscription over one connection — a `ringcast.v1` WebSocket, one
// multi-topic SSE stream, or one multi-topic long poll — with exact resume across reconnects and
// transport switches (every message has a position EPOCH:OFFSET; a topic's offsets count up by
// one, so the client knows what it has and what it missed). No dependencies. See README.md.
//
// The pure parts (positions, stream-position tokens, backoff, SSE parsing, JWT expiry) are
// exported for the unit tests in test/unit.test.mjs; the API is `Ringcast`.

const V1 = 'ringcast.v1';
const WS = 'websocket';
const enc = encodeURIComponent;
const now = () => Date.now();
const M64 = (1n << 64n) - 1n;

/** `"EPOCH:OFFSET"` (lowercase hex : decimal) as `[epoch, offset]` BigInts, or null. */
export const parsePos = (p) => {
  const m = /^([0-9a-f]{1,16}):(\d{1,20})$/.exec(p || '');
  return m ? [BigInt('0x' + m[1]), BigInt(m[2])] : null;
};

/**
 * What a message at `id` is to a subscription that has delivered up to `pos`: 1 the next one (or
 * the first: no position yet), 0 a duplicate (same epoch, not after `pos`), 2 a gap (a skipped
 * offset, another epoch without a reset, or an unreadable id): resynchronise.
 */
export const classify = (pos, id) => {
  const a = parsePos(pos);
  const b = parsePos(id);
  if (!b) return 2;
  if (!a) return 1;
  if (a[0] != b[0]) return 2;
  return b[1] <= a[1] ? 0 : b[1] == a[1] + 1n ? 1 : 2;
};

/** Full-jitter exponential backoff: uniform in [0, min(maxMs, baseMs * 2^fails)). */
export const backoff = (fails, baseMs, maxMs, rnd = Math.random) => rnd() * Math.min(maxMs, baseMs * 2 ** fails);

/**
 * The delay before the next attempt after a connection ended with `end` ({code, reason, retry,
 * opened}), when `fails` attempts in a row have failed: 1001/1012 (drain, restart) a jittered
 * `drainMs` (0.5–1.5×); 4000 (reset) and, with a getToken to get a new token, 4001 (token
 * expired) at once; otherwise the backoff, but never less than the SSE `retry:` hint.
 */
export const delayFor = (end, fails, o, rnd = Math.random) =>
  end.code == 1001 || end.code == 1012
    ? o.drainMs * (0.5 + rnd())
    : end.code == 4000 || (end.code == 4001 && o.getToken)
      ? 0
      : Math.max(end.retry || 0, backoff(fails, o.minDelayMs, o.maxDelayMs, rnd));

const b64 = (u8) => btoa(String.fromCharCode(...u8));
// Standard base64 of base64url (padding is optional to atob).
const std = (s) => s.replace(/-/g, '+').replace(/_/g, '/');
const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

/** A topic's tag in a stream position: FNV-1a 64 of its name (src/codec/streampos.rs). */
export const tag = (topic) => {
  let h = 0xcbf29ce484222325n;
  for (const c of new TextEncoder().encode(topic)) h = ((h ^ BigInt(c)) * 0x100000001b3n) & M64;
  return h;
};

/**
 * The stream position (`s1.` + unpadded base64url of, per topic sorted by tag, the tag as 8
 * bytes little-endian and the position's EPOCH and OFFSET as LEB128) of `[[topic, pos]…]`.
 */
export const encodeStreamPos = (entries) => {
  const raw = [];
  let last = -1n;
  const e = entries.map(([t, p]) => [tag(t), parsePos(p)]).filter((x) => x[1]);
  e.sort((a, b) => (a[0] < b[0] ? -1 : 1)); // equal tags are skipped below
  for (const [t, p] of e) {
    if (t == last) continue;
    last = t;
    for (let i = 0n; i < 64n; i += 8n) raw.push(Number((t >> i) & 255n));
    for (let v of p) {
      for (; v > 127n; v >>= 7n) raw.push(Number(v & 127n) | 128);
      raw.push(Number(v));
    }
  }
  return 's1.' + b64(raw).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
};

/** The positions of a stream position, as a Map from tag to `"EPOCH:OFFSET"`; null if malformed. */
export const decodeStreamPos = (tok) => {
  try {
    const raw = unb64(std(/^s1\.([\w-]*)$/.exec(tok)[1]));
    const out = new Map();
    let i = 0;
    const varint = () => {
      let v = 0n;
      for (let s = 0n, b = 128; b > 127; s += 7n) {
        if (s > 63n) throw 0;
        b = raw[i++];
        v |= BigInt(b & 127) << s;
      }
      return v;
    };
    while (i < raw.length) {
      let t = 0n;
      for (let k = 8; k--; ) t = (t << 8n) | BigInt(raw[i + k]); // throws past the end
      i += 8;
      out.set(t, varint().toString(16) + ':' + varint());
    }
    if (i > raw.length) throw 0; // a varint ran past the end
    return out;
  } catch {
    return null;
  }
};

/**
 * An incremental `text/event-stream` parser (WHATWG HTML §9.2.6; lines end in LF or CRLF): feed
 * it text, it calls `on` with `{retry}` for a `retry:` line and `{event, data, id}` when a blank
 * line ends a block (data null when the block had no data: an `id:` on its own). Comments are
 * skipped.
 */
export const sseParser = (on) => {
  let buf = '';
  let data = null;
  let event = '';
  let id = null;
  return (text) => {
    const lines = (buf + text).split('\n');
    buf = lines.pop();
    for (let line of lines) {
      if (line.endsWith('\r')) line = line.slice(0, -1);
      if (!line) {
        if (data != null || id != null) on({ event: event || 'message', data, id });
        data = id = null;
        event = '';
      }
      const c = line.indexOf(':');
      const f = c < 0 ? line : line.slice(0, c);
      const v = c < 0 ? '' : line.slice(c + (line[c + 1] == ' ' ? 2 : 1));
      if (f == 'data') data = data == null ? v : data + '\n' + v;
      else if (f == 'event') event = v;
      else if (f == 'id') id = v;
      else if (f == 'retry' && /^\d+$/.test(v)) on({ retry: +v });
    }
  };
};

/** A JWT's `exp` in milliseconds; NaN or undefined when the token is not a JWT with an `exp`. */
export const jwtExp = (t) => {
  try {
    return JSON.parse(atob(std(t.split('.')[1]))).exp * 1000;
  } catch {}
};

// A handler that throws must not break the client: rethrown on its own.
const call = (f, ...a) => {
  try {
    f && f(...a);
  } catch (e) {
    setTimeout(() => {
      throw e;
    });
  }
};

const DEFAULTS = {
  transports: ['websocket', 'sse', 'poll'],
  minDelayMs: 500, // backoff base
  maxDelayMs: 30000, // backoff cap
  healthyMs: 10000, // a connection open this long resets the backoff
  drainMs: 2000, // after 1001/1012: reconnect in 0.5–1.5× this
  upgradeMs: 60000, // on a fallback transport, try the first one again after 0.5–1.5× this
  sseFirstByteMs: 4000, // SSE that delivers no byte in this long is buffered: use polling
  sseIdleMs: 45000, // SSE silent this long (no heartbeat) is dead
  pingMs: 20000, // a WebSocket silent this long is probed, and dead after twice this
  pollWaitSecs: 25, // long-poll wait
  refreshBeforeMs: 30000, // refresh a JWT this long before its exp
};

// How a subscription starts: [name, value] for a URL or a subscribe command, or null (now).
const since = (s) => (s.pos ? ['since', s.pos] : s.hist);

// The client. Its state lives in the constructor's closure (so a minifier can shorten every
// internal name); the public surface is what is assigned to `rc`.
export class Ringcast {
  constructor(url, opts = {}) {
    const rc = this;
    const o = { ...DEFAULTS, ...opts };
    const T = o.transports;
    const base = url.replace(/\/+$/, '');
    const subs = new Map(); // topic -> subscription
    let proven = {}; // transports that have opened
    let t = 0; // index of the transport in use or being tried
    let fails = 0; // failed attempts in a row: the backoff exponent
    let pre = 0; // attempts in a row that never opened, on a transport that has worked
    let n = 0; // refs
    let c = null; // the connection: {k, open, close(), refs, send?(), url?, retry?}
    let timer = null; // the next attempt
    let upT; // the next try of the first transport, while on a fallback
    let expT; // the next token refresh
    let queued; // a restart is queued for this tick
    let needTok; // the token was refused: get a new one before the next attempt
    let openedAt;
    let closed;

    rc.token = opts.token;
    rc.state = 'closed';
    rc.transport = null; // rc.onstate: set by the application
    rc.stats = { duplicates: 0, gaps: 0 };

    rc.subscribe = (topic, h = {}) => {
      if (closed) throw Error('ringcast: closed');
      if (subs.has(topic)) throw Error('ringcast: subscribed twice: ' + topic);
      const x = h.since;
      const s = {
        topic,
        h,
        // A saved position is where to resume; "earliest" and {rewind: N} ask for history.
        pos: typeof x == 'string' && x != 'earliest' ? x : null,
        hist: x == 'earliest' ? ['since', x] : x?.rewind != null ? ['rewind', x.rewind] : null,
        get position() {
          return s.pos;
        },
        close() {
          if (subs.get(topic) != s) return;
          subs.delete(topic);
          if (!subs.size) {
            stop();
            set('closed', null);
          } else if (c && c.k == WS) c.open && unsub(topic);
          else restart();
        },
      };
      subs.set(topic, s);
      if (c && c.k == WS) c.open && wsSub(s);
      else restart();
      return s;
    };

    rc.publish = (topic, data, po = {}) => {
      const bin = typeof data != 'string';
      if (c && c.open && c.k == WS) {
        const cc = c;
        return new Promise((res, rej) => {
          const ref = 'p' + ++n;
          cc.refs.set(ref, { res, rej });
          const m = { type: 'publish', topic, data: bin ? b64(data) : data, ref };
          if (po.event) m.event = po.event;
          if (bin) m.encoding = 'base64';
          cc.send(m);
        });
      }
      // A string body goes as text/plain;charset=UTF-8 (no CORS preflight without a token).
      const h = bin ? { 'content-type': 'application/octet-stream' } : {};
      if (rc.token) h.authorization = 'Bearer ' + rc.token;
      const u = base + '/pub/' + enc(topic) + (po.event ? '?event=' + enc(po.event) : '');
      return fetch(u, { method: 'POST', body: data, headers: h }).then(async (r) => {
        const x = await r.text();
        if (r.status != 200) throw Error('ringcast: publish: ' + r.status + ' ' + x);
        return JSON.parse(x).id;
      });
    };

    rc.close = () => {
      closed = 1;
      stop();
      set('closed', null);
    };

    // ---- connection lifecycle ----------------------------------------------------------------

    const set = (state, k) => {
      if (state != rc.state || k != rc.transport) {
        rc.state = state;
        rc.transport = k;
        call(rc.onstate, state, k);
      }
    };

    const stop = () => {
      clearTimeout(timer);
      clearTimeout(upT);
      clearTimeout(expT);
      timer = null;
      const x = c;
      c = null;
      if (x) {
        x.close();
        for (const p of x.refs.values()) p.rej(Error('ringcast: closed, no ack'));
      }
    };

    // A stream's topics are in its URL: reopen it, once per tick however many calls. A pending
    // attempt, or one waiting for its token, reads the subscriptions when it starts.
    const restart = () => {
      if (closed || queued) return;
      queued = 1;
      queueMicrotask(() => {
        queued = 0;
        if (timer || (c && c.open === 0)) return;
        stop();
        open();
      });
    };

    const open = async () => {
      if (closed || c || !subs.size) return;
      const k = T[t % T.length];
      const me = (c = { k, open: 0, close() {}, refs: new Map() }); // refs: publishes awaiting acks
      set(openedAt ? 'reconnecting' : 'connecting', k);
      // Before connecting: a new token when the last was refused, or is not a JWT valid for
      // longer than refreshBeforeMs.
      if (o.getToken && (needTok || !(jwtExp(rc.token) > now() + o.refreshBeforeMs))) {
        needTok = 0;
        try {
          rc.token = await o.getToken();
        } catch {}
        if (c != me) return;
      }
      me.open = false;
      (k == WS ? ws : k == 'sse' ? sse : poll)(me);
    };

    const up = (me) => {
      me.open = true;
      proven[me.k] = 1;
      pre = 0;
      openedAt = now();
      set('open', me.k);
      if (t) upT = setTimeout(() => c == me && ((t = 0), restart()), o.upgradeMs * (0.5 + Math.random()));
      arm(me);
    };

    // Refresh the token refreshBeforeMs before its exp (a JWT's), while `me` is in use.
    const arm = (me) => {
      clearTimeout(expT);
      const d = jwtExp(rc.token) - o.refreshBeforeMs - now();
      if (o.getToken && d > 0) expT = setTimeout(() => refresh(me), d);
    };

    // The token is about to expire: a WebSocket refreshes in band, a stream reconnects with the
    // new token (its position makes that exact), a poll uses it on its next request.
    const refresh = async (me) => {
      try {
        rc.token = await o.getToken();
      } catch {
        return;
      }
      if (c != me) return;
      if (me.k == WS) {
        me.send({ type: 'refresh', token: rc.token });
        arm(me);
      } else if (me.k == 'sse') restart();
    };

    /** The connection `me` ended (`end`: {code, reason, unavailable, status}). */
    const down = (me, end) => {
      if (me != c) return;
      stop();
      if (me.open && now() - openedAt >= o.healthyMs) fails = 0;
      const auth = end.code == 4001 || end.status == 401 || end.status == 403;
      if (auth) needTok = 1;
      const m = end.code == 4000 && /^reset (\S+)/.exec(end.reason);
      if (m) reset(me.url, m[1]);
      let d = null;
      if (!me.open && !auth && (end.unavailable || !proven[me.k] || ++pre >= 3)) {
        // It never opened: the upgrade is refused, a route is missing, or a proxy buffers. Use
        // the next transport at once; back off only once every transport has been tried. A
        // transport that worked before is given three tries first (the node may be restarting).
        pre = 0;
        delete proven[me.k];
        t = (t + 1) % T.length;
        if (t) d = 0;
      }
      if (d == null) {
        d = delayFor({ ...end, retry: me.retry }, fails, o);
        // A server's hint (drain, reset, expired token) is not a failure.
        const x = end.code;
        if (!(x == 1001 || x == 1012 || x == 4000 || (x == 4001 && o.getToken))) fails++;
      }
      set('reconnecting', T[t]);
      clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        open();
      }, d);
    };

    // ---- what every transport delivers -------------------------------------------------------

    const msg = (me, m) => {
      const s = subs.get(m.topic);
      if (!s) return;
      const k = classify(s.pos, m.id);
      if (k != 1) {
        if (k) {
          // A gap, or another epoch without a reset: ask again from the last position, which
          // the server answers with the missed messages or an explicit reset.
          rc.stats.gaps++;
          down(me, {});
        } else rc.stats.duplicates++;
        return;
      }
      s.pos = m.id;
      const { type, encoding, ...x } = m; // {topic, id, data, event?}
      if (encoding == 'base64') x.data = unb64(x.data);
      call(s.h.onMessage, x);
    };

    const reset = (topic, id) => {
      const s = subs.get(topic);
      if (!s || !parsePos(id)) return;
      // A subscription from "now" that had no position yet has lost nothing: this is its start.
      const silent = !s.pos && !s.hist;
      s.pos = id;
      if (!silent) call(s.h.onReset, id);
    };

    // Where live messages continue, for a subscription with no position yet.
    const start = (topic, id) => {
      const s = subs.get(topic);
      if (s && !s.pos && parsePos(id)) s.pos = id;
    };

    // A stream position fills in the topics that have no position yet (it never moves one).
    const token = (tok) => {
      const m = decodeStreamPos(tok);
      if (m) for (const s of subs.values()) start(s.topic, m.get(tag(s.topic)));
    };

    // ---- transports --------------------------------------------------------------------------

    const query = (q) => {
      q = q.filter(Boolean).map(([k, v]) => k + '=' + enc(v));
      if (rc.token) q.push('token=' + enc(rc.token));
      return '?' + q.join('&');
    };

    // A multi-topic stream's URL: every topic, the stream position of those with a position (as
    // `name`), and, when none has one, the first history request (since=earliest / rewind=N).
    const streamUrl = (path, name, extra) => {
      const all = [...subs.values()];
      const have = all.filter((s) => s.pos);
      const q = all.map((s) => ['topic', s.topic]);
      q.push(have.length ? [name, encodeStreamPos(have.map((s) => [s.topic, s.pos]))] : (all.find((s) => s.hist) || {}).hist, extra);
      return base + path + query(q);
    };

    const unsub = (topic) => c.send({ type: 'unsubscribe', topic });

    const wsSub = (s) => {
      const m = { type: 'subscribe', topic: s.topic };
      const x = since(s);
      if (x) m[x[0]] = x[1];
      c.send(m);
    };

    const ws = (me) => {
      const [first] = subs.values();
      me.url = first.topic;
      const w = new WebSocket(base.replace(/^http/, 'ws') + '/ws/' + enc(first.topic) + query([since(first)]), V1);
      let last = now();
      let pinged;
      const P = o.pingMs;
      const tick = setInterval(() => {
        const idle = now() - last;
        if (idle >= 2 * P) down(me, {});
        else if (idle >= P && !pinged) {
          // The browser answers the server's pings without telling us: probe with a command
          // the server answers (`pong`).
          pinged = 1;
          me.send({ type: 'ping', ref: 'hb' });
        }
      }, P / 4);
      me.send = (m) => w.readyState == 1 && w.send(JSON.stringify(m));
      me.close = () => {
        clearInterval(tick);
        w.onopen = w.onclose = w.onmessage = null;
        w.close();
      };
      w.onopen = () => {
        if (w.protocol != V1) return down(me, { unavailable: 1 });
        up(me);
        for (const s of subs.values()) if (s.topic != me.url) wsSub(s);
        if (!subs.has(me.url)) unsub(me.url);
      };
      w.onclose = (e) => down(me, { code: e.code, reason: e.reason });
      w.onmessage = (e) => {
        last = now();
        pinged = 0;
        let m;
        try {
          m = JSON.parse(e.data);
        } catch {
          return;
        }
        const y = m.type;
        const p = me.refs.get(m.ref);
        if (y == 'message') msg(me, m);
        else if (y == 'reset') reset(m.topic, m.id);
        else if (y == 'subscribed') start(m.topic, m.id);
        else if (y == 'expired') o.getToken && refresh(me);
        else if (p && (y == 'ack' || y == 'error')) {
          me.refs.delete(m.ref);
          y == 'ack' ? p.res(m.id) : p.rej(Error('ringcast: ' + m.message));
        }
      };
    };

    const sse = async (me) => {
      const ac = new AbortController();
      let got;
      let last = now();
      const tick = setInterval(() => {
        const idle = now() - last;
        // Not even the opening comment: a proxy buffers the stream. Silent past the
        // heartbeats: dead.
        if (!got && idle > o.sseFirstByteMs) down(me, { unavailable: 1 });
        else if (got && idle > o.sseIdleMs) down(me, {});
      }, 250);
      me.close = () => {
        clearInterval(tick);
        ac.abort();
      };
      const feed = sseParser((e) => {
        if (e.retry != null) me.retry = e.retry;
        if (e.data != null) {
          let d;
          try {
            d = JSON.parse(e.data);
          } catch {
            return;
          }
          e.event == 'reset' ? reset(d.topic, d.id) : e.event == 'message' && msg(me, d);
        }
        if (e.id) token(e.id);
      });
      try {
        const r = await fetch(streamUrl('/sse', 'last_event_id'), { signal: ac.signal, cache: 'no-store' });
        if (r.status != 200) return down(me, { status: r.status, unavailable: r.status == 404 });
        const rd = r.body.getReader();
        const dec = new TextDecoder();
        for (;;) {
          const { value, done } = await rd.read();
          if (c != me || done) break;
          last = now();
          if (!got) {
            got = 1;
            up(me);
          }
          feed(dec.decode(value, { stream: true }));
        }
      } catch {}
      down(me, {});
    };

    const poll = async (me) => {
      let ac;
      me.close = () => {
        me.gone = 1;
        ac && ac.abort();
      };
      // The first request answers at once (no wait): it proves the route and gives a `next`.
      for (let wait = 0; !me.gone; wait = o.pollWaitSecs) {
        ac = new AbortController();
        const to = setTimeout(() => ac.abort(), (wait + 10) * 1000);
        let r;
        let j;
        try {
          r = await fetch(streamUrl('/poll', 'since', wait && ['wait', wait]), { signal: ac.signal, cache: 'no-store' });
          if (r.status == 200) j = await r.json();
        } catch {}
        clearTimeout(to);
        if (me.gone) return;
        const st = r && r.status;
        if (st != 200 && st != 204) return down(me, { status: st, unavailable: st == 404 });
        if (!me.open) up(me);
        if (j) {
          for (const m of j.messages || []) m.type == 'reset' ? reset(m.topic, m.id) : msg(me, m);
          if (c != me) return;
          if (j.next) token(j.next);
        }
      }
    };
  }
}
