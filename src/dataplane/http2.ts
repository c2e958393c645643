import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2Server, Http2Stream, ServerHttp2Session } from 'node:http2';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ListenerConfig } from '../config/types.ts';
import { plainAddress } from './vacate.ts';
import { log } from '../log.ts';

// HTTP/2 to clients. A listener with `http2: true` hands HTTP/2 connections (ALPN h2 on
// TLS, the client preface on plain TCP) to a node:http2 server that never listens on its
// own; its requests, through node's compatibility objects, go to the same handler as
// HTTP/1.1 ones: routed, balanced, retried, counted, logged, and forwarded to HTTP/1.1
// backends over the same undici pools, with the same backpressure.
//
// Guards against HTTP/2's known abuse, per session:
//   - too many streams: at most MAX_STREAMS open; more are refused (REFUSED_STREAM), and a
//     client that keeps opening them past MAX_REJECTED is disconnected (node's
//     maxSessionRejectedStreams);
//   - rapid reset (CVE-2023-44487): streams the client cancels are counted; more than
//     MAX_RESETS in RESET_WINDOW_MS ends the session with ENHANCE_YOUR_CALM;
//   - SETTINGS and PING floods: more than MAX_CONTROL_FRAMES of either in
//     RESET_WINDOW_MS ends the session likewise (nghttp2 also caps queued ACKs);
//   - HPACK bombs: header lists are limited after decompression to the listener's
//     maxHeaderSize and MAX_HEADER_PAIRS fields (nghttp2 answers ENHANCE_YOUR_CALM);
//     the dynamic table stays at HPACK's default 4 KiB.

export const MAX_STREAMS = 100;
export const MAX_REJECTED = 50;
export const MAX_RESETS = 200;
export const MAX_CONTROL_FRAMES = 100;
export const RESET_WINDOW_MS = 10_000;
const MAX_HEADER_PAIRS = 128;
const ENHANCE_YOUR_CALM = 0x0b;
const CANCEL = 0x08;

/** What http2 refuses in a response: headers that belong to one HTTP/1.1 connection. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

type Http2Module = typeof import('node:http2');
type Handler = (req: IncomingMessage, res: ServerResponse) => void;

interface Guarded {
  windowStart: number;
  resets: number;
  settings: number;
  pings: number;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * Reads until the first bytes tell HTTP/2's preface from an HTTP/1.1 request line (four
 * are enough: no method starts with "PRI "), puts them back, and says which it is. A
 * client that sends nothing within the headers timeout is dropped, as node:http would.
 */
function sniff(socket: Socket, timeout: number, then: (h2: boolean) => void): void {
  let seen: Buffer | null = null;
  const timer = setTimeout(() => socket.destroy(), timeout);
  const onData = (chunk: Buffer) => {
    seen = seen === null ? chunk : Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, 4);
    const h2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
    if (h2 && seen.length < 4) return;
    clearTimeout(timer);
    socket.removeListener('data', onData);
    socket.removeListener('close', onClose);
    socket.pause();
    socket.unshift(seen);
    then(h2);
    // node:http reads through a 'data' listener, which does not restart a paused socket;
    // node:http2 takes the buffered bytes with read() and the rest from the handle.
    if (!h2) socket.resume();
  };
  const onClose = () => clearTimeout(timer);
  socket.on('data', onData);
  socket.once('close', onClose);
}

const kGuard = Symbol('tandem.h2guard');
const kFront = Symbol('tandem.h2front');
const kRawSocket = Symbol('tandem.h2socket');
const kOwner = Symbol('tandem.h2owner');
type OwnedStream = Http2Stream & { [kOwner]: ServerHttp2Session };
const kConnection = Symbol('tandem.h2connection');
const kH1Raw = Symbol('tandem.h1raw');
interface H1View {
  [kConnection]: Socket | undefined;
  [kH1Raw]: string[];
}
type GuardedSession = ServerHttp2Session & { [kGuard]: Guarded; [kFront]: Http2Front; [kRawSocket]: Socket };

export interface Http2Counters {
  /** Sessions ended by a guard, by reason. */
  closed: Record<'rapid-reset' | 'settings-flood' | 'ping-flood', number>;
}

/** The HTTP/2 side of one listener. */
export class Http2Front {
  readonly server: Http2Server;
  readonly sessions = new Set<ServerHttp2Session>();
  readonly counters: Http2Counters = { closed: { 'rapid-reset': 0, 'settings-flood': 0, 'ping-flood': 0 } };
  private taking: Socket | null = null;

  constructor(config: ListenerConfig, handler: Handler) {
    const http2 = process.getBuiltinModule('node:http2') as Http2Module;
    const { Request, Response } = compatClasses(http2);
    this.server = http2.createServer({
      settings: { maxConcurrentStreams: MAX_STREAMS, maxHeaderListSize: config.maxHeaderSize, enablePush: false },
      maxHeaderListPairs: MAX_HEADER_PAIRS,
      maxSessionRejectedStreams: MAX_REJECTED,
      maxSessionInvalidFrames: 100,
      maxSettings: 32,
      Http2ServerRequest: Request,
      Http2ServerResponse: Response,
    });
    this.server.on('request', (req: IncomingMessage & { stream: Http2Stream }, res: ServerResponse) => {
      // A stream the client cancelled before its request came up costs nothing more.
      if (!req.stream.destroyed && req.socket !== undefined) handler(req, res);
    });
    this.server.on('session', (session: ServerHttp2Session) => this.watch(session, config));
  }

  /** Takes over a connection that speaks HTTP/2 (negotiated by ALPN, or seen by its preface). */
  take(socket: Socket): void {
    // node:http2 makes the session and emits 'session' synchronously here.
    this.taking = socket;
    this.server.emit('connection', socket);
    this.taking = null;
  }

  /**
   * Puts this front between `server` and its HTTP/1.1 handling: on TLS, connections that
   * negotiated h2 come here; on plain TCP, those that open with the HTTP/2 preface.
   */
  attach(server: Server, tls: boolean): void {
    const event = tls ? 'secureConnection' : 'connection';
    // node:http's own connection listener is the first one registered, by its constructor.
    const http1 = server.listeners(event)[0] as (this: Server, socket: Socket) => void;
    server.removeListener(event, http1);
    const front = this;
    if (tls) {
      server.on(event, function (this: Server, socket: TLSSocket) {
        if (socket.alpnProtocol === 'h2') front.take(socket);
        else http1.call(this, socket);
      });
    } else {
      server.on(event, function (this: Server, socket: Socket) {
        sniff(socket, server.headersTimeout, (h2) => (h2 ? front.take(socket) : http1.call(server, socket)));
      });
    }
  }

  /**
   * GOAWAY to the sessions accepted on local `address` (a VIP being handed over); returns
   * them, and the raw sockets under every session, which HTTP/1.1 must leave alone.
   */
  goAway(address: string): { sessions: ServerHttp2Session[]; sockets: Set<Socket> } {
    const sessions: ServerHttp2Session[] = [];
    const sockets = new Set<Socket>();
    for (const s of this.sessions) {
      const raw = (s as GuardedSession)[kRawSocket];
      sockets.add(raw);
      if (s.closed || plainAddress(raw.localAddress) !== address) continue;
      s.close();
      sessions.push(s);
    }
    return { sessions, sockets };
  }

  /** Sessions on local `address` told to go away that still finish streams in flight. */
  closingOn(address: string): number {
    let n = 0;
    for (const s of this.sessions) if (s.closed && !s.destroyed && plainAddress((s as GuardedSession)[kRawSocket].localAddress) === address) n++;
    return n;
  }

  /** True when `socket` carries one of this front's sessions. */
  owns(socket: Socket): boolean {
    for (const s of this.sessions) if ((s as GuardedSession)[kRawSocket] === socket) return true;
    return false;
  }

  /** GOAWAY to every session: streams in flight finish, no new ones start. */
  close(): void {
    for (const s of this.sessions) if (!s.closed) s.close();
  }

  private watch(session: ServerHttp2Session, config: ListenerConfig): void {
    this.sessions.add(session);
    (session as GuardedSession)[kGuard] = { windowStart: performance.now(), resets: 0, settings: 0, pings: 0 };
    (session as GuardedSession)[kFront] = this;
    (session as GuardedSession)[kRawSocket] = this.taking!;
    session.once('close', () => this.sessions.delete(session));
    // An idle session is closed like an idle HTTP/1.1 keep-alive connection.
    session.setTimeout(Math.max(config.keepAliveTimeout, 1000), () => session.close());
    session.on('error', () => session.destroy());
    session.on('stream', (stream: Http2Stream) => {
      (stream as OwnedStream)[kOwner] = session;
      stream.once('close', onStreamClose);
    });
    session.on('remoteSettings', () => this.control(session, 'settings'));
    session.on('ping', () => this.control(session, 'pings'));
    session.on('frameError', () => session.destroy());
  }

  private control(session: ServerHttp2Session, kind: 'settings' | 'pings'): void {
    const g = guardOf(session);
    if (++g[kind] > MAX_CONTROL_FRAMES) this.refuse(session, kind === 'settings' ? 'settings-flood' : 'ping-flood');
  }

  /** Ends an abusive session: GOAWAY with ENHANCE_YOUR_CALM, then the connection. */
  refuse(session: ServerHttp2Session, reason: keyof Http2Counters['closed']): void {
    if (session.destroyed) return;
    this.counters.closed[reason]++;
    // Never per request: only when a client is cut off for abuse.
    const client = session.socket?.remoteAddress ?? null;
    log.warn({ event: 'http2_session_refused', reason, client }, `HTTP/2 session from ${client} refused: ${reason}`);
    session.goaway(ENHANCE_YOUR_CALM);
    session.destroy();
  }

}

function guardOf(session: ServerHttp2Session): Guarded {
  const g = (session as GuardedSession)[kGuard];
  const now = performance.now();
  if (now - g.windowStart > RESET_WINDOW_MS) {
    g.windowStart = now;
    g.resets = 0;
    g.settings = 0;
    g.pings = 0;
  }
  return g;
}

/**
 * Counts streams the client cancelled (RST_STREAM CANCEL; tandem itself resets with other
 * codes). Read at 'close', which every stream emits, also those cancelled in the same
 * read as their HEADERS, before any handler saw them.
 */
function onStreamClose(this: OwnedStream): void {
  if (this.rstCode !== CANCEL) return;
  const session = this[kOwner];
  if (session.destroyed) return;
  const g = guardOf(session);
  if (++g.resets > MAX_RESETS) (session as GuardedSession)[kFront].refuse(session, 'rapid-reset');
}

/**
 * node's compatibility request and response, adjusted to what the HTTP/1.1 handler
 * expects: rawHeaders without pseudo-headers, Host from :authority, cookies joined as
 * RFC 9113 §8.2.3 asks when going to HTTP/1.1, a body marked as such when the client
 * sends one without a length; and responses that drop HTTP/1.1 connection headers and
 * the reason phrase, which HTTP/2 does not carry.
 */
function compatClasses(http2: Http2Module) {
  class Request extends http2.Http2ServerRequest {
    constructor(stream: Http2Stream, headers: Record<string, string | string[] | undefined>, options: object, rawHeaders: string[]) {
      super(stream as never, headers as never, options as never, rawHeaders);
      const h = this.headers;
      if (h.host === undefined && h[':authority'] !== undefined) h.host = h[':authority'] as string;
      if (Array.isArray(h.cookie)) h.cookie = h.cookie.join('; ');
      // The handler decides that a request has a body by its framing headers; in HTTP/2
      // a body needs neither, only a HEADERS frame without END_STREAM.
      if (!stream.endAfterHeaders && h['content-length'] === undefined) h['transfer-encoding'] = 'chunked';
      // The connection itself, where the listener keeps what it decided about the client
      // (node's req.socket is a proxy that forgets it once the stream closes).
      (this as unknown as H1View)[kConnection] = (stream.session as GuardedSession | undefined)?.[kRawSocket];
      (this as unknown as H1View)[kH1Raw] = http1RawHeaders(rawHeaders, h.host);
    }
  }
  // Getters on the prototype rather than properties defined per request, which would
  // turn every request object into a slow dictionary.
  Object.defineProperty(Request.prototype, 'socket', { get(this: H1View) { return this[kConnection]; } });
  Object.defineProperty(Request.prototype, 'rawHeaders', { get(this: H1View) { return this[kH1Raw]; } });

  class Response extends http2.Http2ServerResponse {
    override writeHead(status: number, message?: unknown, headers?: unknown): this {
      const h = typeof message === 'string' || message === undefined ? headers : message;
      return super.writeHead(status, withoutConnectionHeaders(h) as never);
    }
  }
  // node's compatibility response says it finished when its stream closed, even by a
  // reset; the handler reads writableFinished to tell a complete answer from a client
  // that went away (and then stops the upstream request).
  Object.defineProperty(Response.prototype, 'writableFinished', {
    get(this: InstanceType<typeof Response>): boolean {
      return this.writableEnded && this.stream.rstCode === 0;
    },
  });
  return { Request, Response };
}

/** HTTP/2 raw headers as HTTP/1.1 has them: no pseudo-headers, one cookie line, a Host. */
function http1RawHeaders(raw: string[], host: string | undefined): string[] {
  const out: string[] = [];
  let cookie: string | null = null;
  let hasHost = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.charCodeAt(0) === 58 /* : */) continue;
    if (name === 'cookie') {
      cookie = cookie === null ? raw[i + 1] : `${cookie}; ${raw[i + 1]}`;
      continue;
    }
    if (name === 'host') hasHost = true;
    out.push(name, raw[i + 1]);
  }
  if (cookie !== null) out.push('cookie', cookie);
  if (!hasHost && host !== undefined) out.push('host', host);
  return out;
}

function withoutConnectionHeaders(h: unknown): unknown {
  if (h === undefined || h === null) return undefined;
  if (Array.isArray(h)) {
    let clean = true;
    for (let i = 0; i < h.length; i += 2) if (CONNECTION_SPECIFIC.has(String(h[i]).toLowerCase())) clean = false;
    if (clean) return h;
    const out: unknown[] = [];
    for (let i = 0; i < h.length; i += 2) if (!CONNECTION_SPECIFIC.has(String(h[i]).toLowerCase())) out.push(h[i], h[i + 1]);
    return out;
  }
  const o = h as Record<string, unknown>;
  let clean = true;
  for (const k in o) if (CONNECTION_SPECIFIC.has(k.toLowerCase())) clean = false;
  if (clean) return o;
  const out: Record<string, unknown> = {};
  for (const k in o) if (!CONNECTION_SPECIFIC.has(k.toLowerCase())) out[k] = o[k];
  return out;
}
