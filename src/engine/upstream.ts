import type { Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import type buildConnectorType from 'undici/lib/core/connect.js';
import { consumable, HTTPParser, PARK_AFTER_MS, ParserPool, resumeRead, type Parser, type ParserCallbacks } from './llhttp.ts';
import { UpstreamRequest } from './upstream-request.ts';

// The upstream side of the fast engine: keep-alive HTTP/1.1 connections to one backend,
// one request at a time on each, parsed by llhttp consuming the socket's handle (TLS
// sockets are fed by hand). It takes the same dispatch(options, handler) call and calls
// the same handler methods as undici's Pool, so forward.ts's ProxyRequest drives both
// engines alike: onRequestStart, onResponseStart with a header object, onResponseData,
// onResponseEnd, onResponseError with undici's error codes (so retries and outlier
// detection classify failures the same way), and a controller to pause, resume and
// abort the exchange. Connections are made by the backend's undici connector, so TLS,
// the PROXY header and the connect timeout are the same as on the node engine.

export interface UpstreamSettings {
  readonly connect: buildConnectorType.connector;
  readonly origin: URL;
  /** Time from the request sent to the response head (undici's headersTimeout). */
  readonly headersTimeout: number;
  /** Time between two reads of the response body (undici's bodyTimeout). */
  readonly bodyTimeout: number;
  /** How long an idle connection is kept, at most (a backend's Keep-Alive hint may shorten it). */
  readonly keepAliveTimeout: number;
}

/** A Keep-Alive hint is trusted to within this much, as undici does. */
const KEEP_ALIVE_MARGIN_MS = 1000;
/** Idle connections past their keep-alive time are closed this often (one timer per upstream, not one per connection). */
const IDLE_SWEEP_MS = 1000;

export class FastUpstream {
  readonly settings: UpstreamSettings;
  /** Idle keep-alive connections, the most recently used last. */
  private readonly idle: UpstreamConnection[];
  private readonly open: Set<UpstreamConnection>;
  /** Exchanges in flight (connecting included). */
  active: number;
  closed: boolean;
  private onIdle: (() => void) | null;
  private sweeper: NodeJS.Timeout | null;

  constructor(settings: UpstreamSettings) {
    this.settings = settings;
    this.idle = [];
    this.open = new Set();
    this.active = 0;
    this.closed = false;
    this.onIdle = null;
    this.sweeper = null;
  }

  /** Sends one request (undici's Dispatcher.dispatch, as forward.ts calls it). */
  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const r = new UpstreamRequest(this, options, handler);
    this.active++;
    handler.onRequestStart?.(r, {});
    if (r.aborted) return true;
    const conn = this.take();
    if (conn !== null) conn.send(r);
    else this.connect(r);
    return true;
  }

  private connect(r: UpstreamRequest): void {
    const o = this.settings.origin;
    // An IPv6 literal comes bracketed in a URL, not in a connect call.
    const hostname = o.hostname.charCodeAt(0) === 91 /* [ */ ? o.hostname.slice(1, -1) : o.hostname;
    this.settings.connect({
      hostname, host: o.host, protocol: o.protocol, port: o.port, servername: r.servername, localAddress: null, httpSocket: undefined,
    } as never, (err, socket) => {
      if (err !== null || socket === null) {
        r.fail(err ?? new Error('no socket'));
        return;
      }
      const conn = new UpstreamConnection(this, socket as Socket);
      this.open.add(conn);
      // Closed meanwhile: the exchange was dispatched before, so it still goes (undici's
      // close() lets it finish, and close() waits for it); the connection closes after it.
      if (r.aborted) this.release(conn);
      else conn.send(r);
    });
  }

  /** The most recently used idle connection still within its keep-alive time; null: none. */
  private take(): UpstreamConnection | null {
    const now = performance.now();
    for (let c = this.idle.pop(); c !== undefined; c = this.idle.pop()) {
      if (c.usable(now)) return c;
      c.socket.destroy();
    }
    return null;
  }

  /** An exchange ended: its connection, when still usable, waits for the next. */
  release(c: UpstreamConnection): void {
    if (this.closed || c.socket.destroyed) {
      c.socket.destroy();
      return;
    }
    c.idleSince = performance.now();
    resumeRead(c.socket);
    this.idle.push(c);
    if (this.sweeper === null) {
      this.sweeper = setInterval(sweepIdle, IDLE_SWEEP_MS, this);
      this.sweeper.unref();
    }
  }

  /** Closes the idle connections past their keep-alive time: take() would not use them, and a backend may never close them. */
  sweepIdle(): void {
    const now = performance.now();
    const idle = this.idle;
    let kept = 0;
    for (let i = 0; i < idle.length; i++) {
      const c = idle[i];
      if (!c.usable(now)) {
        c.socket.destroy();
        continue;
      }
      idle[kept++] = c;
      if (c.parser !== null && now - c.idleSince >= PARK_AFTER_MS) c.park();
    }
    idle.length = kept;
    if (kept === 0) this.stopSweeping();
  }

  private stopSweeping(): void {
    if (this.sweeper === null) return;
    clearInterval(this.sweeper);
    this.sweeper = null;
  }

  /** A finished exchange (whatever way): counted out; close() may now complete. */
  done(): void {
    this.active--;
    if (this.active === 0 && this.onIdle !== null) this.onIdle();
  }

  forget(c: UpstreamConnection): void {
    this.open.delete(c);
    const i = this.idle.indexOf(c);
    if (i !== -1) this.idle.splice(i, 1);
  }

  /** No new exchanges are expected: idle connections close now, busy ones after their exchange (undici's close()). */
  close(): Promise<void> {
    this.closed = true;
    this.stopSweeping();
    for (const c of this.idle.splice(0)) c.socket.destroy();
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.onIdle = () => {
        this.onIdle = null;
        resolve();
      };
    });
  }

  destroy(): Promise<void> {
    this.closed = true;
    this.stopSweeping();
    for (const c of this.open) c.socket.destroy();
    this.idle.length = 0;
    return Promise.resolve();
  }
}

function sweepIdle(upstream: FastUpstream): void {
  upstream.sweepIdle();
}

const callbacks: ParserCallbacks = { head: onResponseHead, body: onResponseBody, end: onResponseEnd, execute: onExecute };
const parsers = new ParserPool(HTTPParser.RESPONSE, callbacks, 16);

type Owned = Socket & { owner: UpstreamConnection };

export class UpstreamConnection {
  readonly upstream: FastUpstream;
  readonly socket: Owned;
  /** null while the connection is parked: idle, its parser given back until its next exchange. */
  parser: Parser | null;
  /** Fed by hand (TLS): the handle is not a plain stream llhttp can consume. */
  readonly fed: boolean;
  headers: string[];
  url: string;
  /** The exchange on this connection; null while idle. */
  req: UpstreamRequest | null;
  /** An interim (1xx) answer is being parsed: its end is not the exchange's. */
  interim: boolean;
  keepAlive: boolean;
  idleSince: number;
  keepAliveMs: number;
  /** The socket's error, reported when it closes under an exchange. */
  error: Error | null;

  constructor(upstream: FastUpstream, socket: Socket) {
    this.upstream = upstream;
    this.socket = socket as Owned;
    this.socket.owner = this;
    this.headers = [];
    this.url = '';
    this.req = null;
    this.interim = false;
    this.keepAlive = false;
    this.idleSince = 0;
    this.keepAliveMs = upstream.settings.keepAliveTimeout;
    this.error = null;
    this.fed = !consumable(socket);
    this.parser = this.takeParser();
    // Fed sockets give their reads here; consumed ones never do, but a listener keeps the stream flowing so 'end' comes.
    socket.on('data', onData);
    socket.on('drain', onDrain);
    socket.on('end', onEnd);
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.setTimeout(0);
  }

  /** Idle, open, and within its keep-alive time at `now`. */
  usable(now: number): boolean {
    return !this.socket.destroyed && now - this.idleSince < this.keepAliveMs;
  }

  send(r: UpstreamRequest): void {
    // A parked connection takes a parser before its request goes out, so that the answer is read by one.
    if (this.parser === null) this.parser = this.takeParser();
    this.req = r;
    this.interim = false;
    r.attachTo(this);
  }

  private takeParser(): Parser {
    return parsers.take(this, 0, this.fed ? null : this.socket);
  }

  /** Idle: gives the parser back; the socket's reads come to onData until the next exchange takes one. */
  park(): void {
    parsers.give(this.parser!, this.socket);
    this.parser = null;
  }

  /** The response ended, or the exchange was dropped: the connection is free again, or closed. */
  finish(reusable: boolean): void {
    this.req = null;
    if (reusable && this.keepAlive) this.upstream.release(this);
    else this.socket.destroy();
  }
}

function onData(this: Owned, chunk: Buffer): void {
  const c = this.owner;
  // Bytes on a parked connection answer no request: it cannot be used again.
  if (c.parser === null) this.destroy();
  else if (c.fed) onExecute.call(c.parser, c.parser.execute(chunk));
}

function onDrain(this: Owned): void {
  this.owner.req?.drained();
}

function onEnd(this: Owned): void {
  const c = this.owner;
  // A body delimited by the connection's close ends here; any other answer was cut.
  if (c.req !== null && c.parser !== null) {
    const ret = c.parser.finish();
    if (ret instanceof Error) c.req.fail(socketError(c, 'other side closed'));
  }
  this.destroy();
}

function onError(this: Owned, err: Error): void {
  this.owner.error ??= err;
}

function onClose(this: Owned): void {
  const c = this.owner;
  c.upstream.forget(c);
  const r = c.req;
  c.req = null;
  if (r !== null) r.fail(socketError(c, 'socket closed'));
  if (c.parser !== null) parsers.release(c.parser, null);
  c.parser = null;
}

function socketError(c: UpstreamConnection, message: string): Error {
  if (c.error !== null) return c.error;
  return Object.assign(new Error(message), { code: 'UND_ERR_SOCKET' });
}

function onResponseHead(this: Parser, _major: number, _minor: number, headers: string[] | undefined, _method: number,
  _url: string | undefined, status: number, message: string | undefined, upgrade: boolean, keepAlive: boolean): number {
  const c = this.owner as UpstreamConnection | null;
  if (c === null) return -1;
  if (headers === undefined) {
    headers = c.headers;
    c.headers = [];
    c.url = '';
  }
  const r = c.req;
  // Bytes nobody asked for, or a protocol switch nobody asked for: the connection is out of step.
  if (r === null || upgrade) {
    r?.fail(Object.assign(new Error('unexpected answer'), { code: 'UND_ERR_INFO' }));
    c.socket.destroy();
    return -1;
  }
  if (status < 200) {
    // 100 Continue (which tandem never asks for), 102, 103: skipped, the final answer follows.
    c.interim = true;
    return 0;
  }
  c.keepAlive = keepAlive;
  const object: Record<string, string | string[]> = {};
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i].toLowerCase();
    const value = headers[i + 1];
    const had = object[name];
    if (had === undefined) object[name] = value;
    else if (typeof had === 'string') object[name] = [had, value];
    else had.push(value);
    if (name === 'keep-alive') c.keepAliveMs = keepAliveHint(value, c.upstream.settings.keepAliveTimeout);
  }
  r.responseStart(status, object, message ?? '');
  // 1 tells llhttp that no body follows (a HEAD request); 204 and 304 it knows itself.
  return r.method === 'HEAD' ? 1 : 0;
}

/** `timeout=N` of a Keep-Alive header, less a margin, within the configured keep-alive time. */
function keepAliveHint(value: string | string[], max: number): number {
  // Backends send the same value on every answer: the last one is remembered.
  if (value === lastHint && max === lastMax) return lastMs;
  const ms = parseHint(value, max);
  if (typeof value === 'string') {
    lastHint = value;
    lastMax = max;
    lastMs = ms;
  }
  return ms;
}

let lastHint = '';
let lastMax = 0;
let lastMs = 0;

function parseHint(value: string | string[], max: number): number {
  const m = /timeout=(\d+)/i.exec(Array.isArray(value) ? value.join(',') : value);
  if (m === null) return max;
  return Math.max(0, Math.min(max, Number(m[1]) * 1000 - KEEP_ALIVE_MARGIN_MS));
}

function onResponseBody(this: Parser, chunk: Buffer): void {
  const r = (this.owner as UpstreamConnection | null)?.req ?? null;
  if (r !== null) r.responseData(chunk);
}

function onResponseEnd(this: Parser): void {
  const c = this.owner as UpstreamConnection | null;
  if (c === null) return;
  if (c.interim) {
    c.interim = false;
    return;
  }
  const r = c.req;
  if (r !== null) r.responseEnd();
}

function onExecute(this: Parser, ret: number | Error): void {
  const c = this.owner as UpstreamConnection | null;
  if (c === null || typeof ret === 'number') return;
  // llhttp refused the answer: an invalid response (HPE_* code), and the connection is out of step.
  const r = c.req;
  c.req = null;
  r?.fail(ret);
  c.socket.destroy();
}
