// Type declarations for ringcast.js, the ringcast browser client (see README.md).

/** A message position `EPOCH:OFFSET`: opaque to applications; save it to resume later. */
export type Position = string;

export type Transport = 'websocket' | 'sse' | 'poll';

export type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface Message {
  topic: string;
  id: Position;
  /** A string for text messages, the bytes for binary ones. */
  data: string | Uint8Array;
  /** The event name it was published with, if any. */
  event?: string;
}

export interface SubscribeOptions {
  /**
   * Where to start: a saved position (resume right after it), "earliest" (the retained history),
   * `{ rewind: n }` (the last n messages), or nothing (only new messages).
   */
  since?: Position | 'earliest' | { rewind: number };
  /** Every message, once, in order. */
  onMessage?(m: Message): void;
  /** The history between the last position and `id` is lost: refetch your state. Live messages continue after `id`. */
  onReset?(id: Position): void;
}

export interface Subscription {
  readonly topic: string;
  /** The last position delivered (or where live messages continue from); null before the first. */
  readonly position: Position | null;
  close(): void;
}

export interface RingcastOptions {
  /** Sent as `?token=` on WebSocket, SSE and poll, and as `Authorization: Bearer` on HTTP publish. */
  token?: string;
  /**
   * Returns a fresh token. Called before connecting unless the token is a JWT valid for more than
   * `refreshBeforeMs`, after close 4001 or a 401/403, on `{"type":"expired"}`, and
   * `refreshBeforeMs` before a JWT's `exp`.
   */
  getToken?(): string | Promise<string>;
  /** In order of preference. Default `["websocket", "sse", "poll"]`. */
  transports?: Transport[];
  /** Backoff base, ms (default 500). */
  minDelayMs?: number;
  /** Backoff cap, ms (default 30000). */
  maxDelayMs?: number;
  /** A connection open this long resets the backoff, ms (default 10000). */
  healthyMs?: number;
  /** After close 1001/1012 (drain, restart), reconnect in 0.5–1.5 × this, ms (default 2000). */
  drainMs?: number;
  /** On a fallback transport, try the first again after 0.5–1.5 × this, ms (default 60000). */
  upgradeMs?: number;
  /** SSE that delivers no byte in this long is taken as buffered: use the next transport, ms (default 4000). */
  sseFirstByteMs?: number;
  /** SSE silent this long (no heartbeat) is dead, ms (default 45000). */
  sseIdleMs?: number;
  /** A WebSocket silent this long is probed, and dead after twice this, ms (default 20000). */
  pingMs?: number;
  /** Long-poll wait, seconds (default 25). */
  pollWaitSecs?: number;
  /** Refresh a JWT this long before its `exp`, ms (default 30000). */
  refreshBeforeMs?: number;
}

export interface PublishOptions {
  event?: string;
}

export class Ringcast {
  /** `url`: the node's HTTP origin, e.g. "https://push.example.com". */
  constructor(url: string, options?: RingcastOptions);
  subscribe(topic: string, options?: SubscribeOptions): Subscription;
  /** Resolves to the new message's position. Over the WebSocket when it is open, else HTTP POST. */
  publish(topic: string, data: string | Uint8Array, options?: PublishOptions): Promise<Position>;
  close(): void;
  onstate?: ((state: State, transport: Transport | null) => void) | null;
  readonly state: State;
  readonly transport: Transport | null;
  token: string | undefined;
  /** Duplicates dropped and gaps seen (each gap makes the client ask again from its position). */
  readonly stats: { duplicates: number; gaps: number };
}

// The pure parts, exported for tests and tools.
export function parsePos(p: string | null | undefined): [bigint, bigint] | null;
export function classify(pos: Position | null, id: Position): 0 | 1 | 2;
export function backoff(fails: number, baseMs: number, maxMs: number, rnd?: () => number): number;
export function delayFor(
  end: { code?: number; retry?: number },
  fails: number,
  o: { minDelayMs: number; maxDelayMs: number; drainMs: number; getToken?: unknown },
  rnd?: () => number,
): number;
export function tag(topic: string): bigint;
export function encodeStreamPos(entries: [string, Position][]): string;
export function decodeStreamPos(token: string): Map<bigint, Position> | null;
export function sseParser(on: (e: { retry?: number; event?: string; data?: string | null; id?: string | null }) => void): (text: string) => void;
export function jwtExp(token: string | undefined): number | undefined;
