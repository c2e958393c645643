import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ListenerConfig } from '../config/types.ts';
import { errors, type ErrorSpec } from '../errors.ts';
import { ProxyRequest } from './forward.ts';
import type { RequestObserver } from './exchange.ts';
import { answerError, writeRaw } from './own-answers.ts';
import { answeredRaw, clientError, refuseMalformed } from './client-errors.ts';
import { FastFront } from '../engine/front.ts';
import type { Generation, RouteRuntime } from './generation.ts';
import { Http2Front } from './http2.ts';
import { ProxyProtocolReader } from './proxy-protocol.ts';
import { refuseRaw } from './route-actions.ts';
import { Certificates } from './tls.ts';
import { clientAddressOf, TrustedProxies, type ForwardContext } from './headers.ts';
import { admit, afterAnswers, attach, type Connection } from './pipeline.ts';
import { checkRequest, isWebSocketUpgrade } from './request-checks.ts';
import { requestIdOf, traceOf } from './request-id.ts';
import { plainAddress, type Closing, type Vacancies } from './vacate.ts';

const kListener = Symbol('tandem.listener');
const kContext = Symbol('tandem.context');

type TandemSocket = Socket & { [kContext]?: Connection };
type TandemServer = Server & { [kListener]: Listener };

/** What every listener shares: the current generation and where finished requests go. */
export interface ListenerState {
  generation: Generation;
  trusted: TrustedProxies;
  observer: RequestObserver;
  shuttingDown: boolean;
  /** VIP addresses being handed over: no more keep-alive on connections accepted on them. */
  readonly vacancies: Vacancies;
  /** Proxied requests in flight, across config generations. */
  active: number;
}

/**
 * One bound address. Its request handler reads the data plane's current generation per
 * request, so a reload swaps routes and pools under a listener that never closes.
 */
export class Listener {
  config: ListenerConfig;
  /** Index into the current config's listeners; updated on reload. */
  index: number;
  readonly server: Server;
  readonly plane: ListenerState;
  readonly connections: Set<Socket>;
  /** Removed by a reload: its remaining connections get Connection: close answers. */
  retired: boolean;
  /** The TLS certificates by SNI name; null on a plain listener. */
  readonly certificates: Certificates | null;
  /** HTTP/2 sessions of this listener; null without `http2: true`. */
  readonly http2: Http2Front | null;
  /** Reads PROXY headers from trusted balancers; null when the listener takes none. */
  readonly proxyProtocol: ProxyProtocolReader | null;
  /** Connections closed at once because this process's share of maxConnections was open. */
  refused: number;
  /** The fast engine's server, which accepts the connections instead of node:http's (engine: fast); else null. */
  readonly front: FastFront | null;

  constructor(config: ListenerConfig, index: number, plane: ListenerState) {
    const listener = this;
    this.config = config;
    this.index = index;
    this.plane = plane;
    this.connections = new Set();
    this.retired = false;
    const options = {
      headersTimeout: config.headersTimeout,
      requestTimeout: config.requestTimeout,
      keepAliveTimeout: config.keepAliveTimeout,
      maxHeaderSize: config.maxHeaderSize,
      // Node's own check of the request timeout runs on this period.
      connectionsCheckingInterval: Math.min(1000, Math.max(100, Math.floor(config.headersTimeout / 4))),
      // Checked by checkRequest, which answers with tandem's own error body.
      requireHostHeader: false,
      // Only WebSocket upgrades are proxied as upgrades; h2c and the like are answered
      // over HTTP/1.1 as RFC 9110 §7.8 allows (the Upgrade header is hop-by-hop).
      shouldUpgradeCallback: isWebSocketUpgrade,
    };
    this.certificates = config.tls === null ? null : new Certificates(config.tls);
    this.server = config.tls === null
      ? createHttpServer(options)
      // node:https (and with it tls) is loaded only where a listener terminates TLS.
      : process.getBuiltinModule('node:https').createServer({ ...options, ...this.certificates!.serverOptions(config.tls, config.http2 === true) });
    (this.server as TandemServer)[kListener] = this;
    this.server.maxConnections = connectionShare(config, plane);
    this.refused = 0;
    this.server.on('drop', () => this.refused++);
    this.server.on('request', onRequest);
    this.server.on('connection', onConnection);
    this.server.on('secureConnection', onConnection);
    this.server.on('clientError', onClientError);
    this.server.on('upgrade', onUpgrade);
    this.http2 = config.http2 === true ? new Http2Front(config, onStream) : null;
    this.http2?.attach(this.server, config.tls !== null);
    // Last, so that it runs before every other connection handler.
    this.proxyProtocol = config.proxyProtocol == null ? null : new ProxyProtocolReader(config.proxyProtocol.from);
    this.proxyProtocol?.attach(this.server, () => this.config.headersTimeout);
    // node:http's server stays, unbound: the fast front hands it upgrades with their connection.
    this.front = config.engine === 'fast' ? new FastFront({
      get config() {
        return listener.config;
      },
      server: this.server,
      open: (socket) => openConnection(listener, socket, true),
      serve,
      refuse: (conn, spec) => refuseMalformed(plane, conn, spec),
      dropped: () => this.refused++,
    }) : null;
    if (this.front !== null) this.front.server.maxConnections = this.server.maxConnections;
  }

  /** The server bound to the address: the fast front's, or node:http's. */
  private get bound(): import('node:net').Server {
    return this.front?.server ?? this.server;
  }

  /** Applies a reloaded config's timeouts and limits to the running server (see keepsServer in data-plane.ts). */
  update(config: ListenerConfig, index: number): void {
    this.config = config;
    this.index = index;
    this.server.headersTimeout = config.headersTimeout;
    this.server.requestTimeout = config.requestTimeout;
    this.server.keepAliveTimeout = config.keepAliveTimeout;
    // node:http reads it for each new connection.
    (this.server as Server & { maxHeaderSize: number }).maxHeaderSize = config.maxHeaderSize;
    this.server.maxConnections = connectionShare(config, this.plane);
    if (this.front !== null) this.front.server.maxConnections = this.server.maxConnections;
    // Certificates renewed in place (same paths) are read again: new handshakes use them,
    // established connections keep theirs.
    if (config.tls !== null && this.certificates !== null) {
      this.certificates.load(config.tls);
      (this.server as import('node:https').Server).setSecureContext(this.certificates.defaults());
    }
  }

  /** Closes the connections that wait between requests, on either engine. */
  closeIdleConnections(): void {
    this.server.closeIdleConnections();
    this.front?.closeIdle();
    // node:http leaves a connection that has sent nothing open (until its headers timeout);
    // nginx counts it idle, and so does tandem: nothing of it can be in flight.
    for (const socket of this.connections) if (socket.bytesRead === 0 && !socket.destroyed) socket.destroy();
  }

  /** Taken out of the config by a reload; its open connections are wound down. */
  retire(): void {
    this.retired = true;
    this.closeIdleConnections();
    this.http2?.close();
  }

  /**
   * Binds the address with SO_REUSEPORT: every data plane binds its own socket beside
   * those of the others, and the kernel spreads connections over them
   * (src/control/port-pins.ts says why not node:cluster's shared handle).
   */
  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      const server = this.bound;
      server.once('error', onError);
      server.listen({ host: this.config.host, port: this.config.port, exclusive: true, reusePort: true }, () => {
        server.off('error', onError);
        resolve();
      });
    });
  }

  /** The bound address as host:port. */
  address(): string {
    const a = this.bound.address();
    if (a === null || typeof a === 'string') return String(a);
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  /** Stops accepting, closes idle keep-alive connections; in-flight requests go on. */
  stopAccepting(): Promise<void> {
    return new Promise((resolve) => {
      this.bound.close(() => resolve());
      this.closeIdleConnections();
      this.http2?.close();
    });
  }

  /**
   * Starts winding down the connections accepted on local `address` (a VIP being handed
   * over, see vacate.ts): HTTP/2 sessions get a GOAWAY, the response in flight on a busy
   * connection closes it, an idle one closes after the answer to its next request (the
   * request path answers with Connection: close). Returns them all.
   */
  vacate(address: string): Closing[] {
    const h2 = this.http2?.goAway(address) ?? { sessions: [], sockets: new Set<Socket>() };
    const open: Closing[] = [...h2.sessions];
    for (const socket of this.connections) {
      if (socket.destroyed || h2.sockets.has(socket) || plainAddress(socket.localAddress) !== address) continue;
      open.push(socket);
      const conn = (socket as TandemSocket)[kContext];
      const res = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
      if (conn === undefined || res == null) continue;
      // Its head not out yet: it says Connection: close. Else the connection ends after it
      // (requests held behind it are answered with close).
      if (!res.headersSent) res.shouldKeepAlive = false;
      else res.once('finish', () => endIfDone(conn));
    }
    return open;
  }

  /**
   * Closes those of `among` (what vacate returned) that are idle (or upgraded) now: the
   * last step of a handover, when their clients did not use them while it waited. Newer
   * connections are left to close after their first answer: one may carry a request not
   * yet read. Returns how many busy ones are left.
   */
  closeIdle(among: ReadonlySet<Closing>): number {
    let busy = 0;
    for (const socket of this.connections) {
      if (socket.destroyed || !among.has(socket)) continue;
      if (owesAnswer(socket)) busy++;
      else if (this.http2 === null || !this.http2.owns(socket)) socket.destroy();
    }
    return busy;
  }

  /** How many connections accepted on local `address` owe an answer (HTTP/2: sessions finishing streams). */
  busyOn(address: string): number {
    let busy = this.http2?.closingOn(address) ?? 0;
    for (const socket of this.connections) {
      if (!socket.destroyed && plainAddress(socket.localAddress) === address && owesAnswer(socket)) busy++;
    }
    return busy;
  }

  /** Destroys every remaining connection. */
  destroyAll(): void {
    this.server.closeAllConnections();
    for (const s of this.connections) s.destroy();
  }
}

/** This process's share of the listener's maxConnections (node:http closes connections beyond it at once). */
function connectionShare(config: ListenerConfig, plane: ListenerState): number {
  if (config.maxConnections === 0) return Infinity;
  return Math.ceil(config.maxConnections / Math.max(1, plane.generation.config.workers));
}

function onConnection(this: TandemServer, socket: TandemSocket): void {
  openConnection(this[kListener], socket, false);
}

/** A client connection's context, made once: client address, trust, listener; `fast`: the fast engine serves it. */
function openConnection(listener: Listener, socket: TandemSocket, fast: boolean): Connection {
  const plane = listener.plane;
  const proxied = listener.proxyProtocol?.peerOf(socket) ?? null;
  const address = clientAddressOf(proxied?.address ?? socket.remoteAddress);
  // Trust is a property of the connection: decided once here, not per request.
  const conn: Connection = {
    clientAddress: address,
    trusted: plane.trusted.trusts(address),
    proto: listener.config.tls === null ? 'http' : 'https',
    listener: listener.index,
    plane,
    owner: listener,
    socket,
    proxied,
    privateUpstreams: null,
    fast,
    busy: false,
    held: null,
    broken: null,
    upgrade: null,
  };
  socket[kContext] = conn;
  attach(conn);
  listener.connections.add(socket);
  // on, not once: a socket closes once, and once() would add a closure and its context to every connection.
  socket.on('close', onSocketClose);
  (socket as Socket & { [kListener]?: Listener })[kListener] = listener;
  return conn;
}

/** True when an HTTP/1 connection has a request in flight or pipelined requests held. */
function owesAnswer(socket: Socket): boolean {
  const conn = (socket as TandemSocket)[kContext];
  return conn !== undefined && (conn.busy || (conn.held !== null && conn.held.length > 0));
}

/** Ends a vacated connection after its last response, unless pipelined requests are still held. */
function endIfDone(conn: Connection): void {
  if (conn.held === null || conn.held.length === 0) conn.socket.end();
}

function onSocketClose(this: Socket & { [kListener]?: Listener }): void {
  this[kListener]?.connections.delete(this);
}

function onRequest(this: TandemServer, req: IncomingMessage, res: ServerResponse): void {
  const conn = (req.socket as TandemSocket)[kContext]!;
  admit(conn, req, res, performance.now(), serve);
}

/**
 * An HTTP/2 request: served at once. Streams of one session are concurrent by design and
 * bounded by the session's own stream limit (http2.ts); the HTTP/1.1 pipeline would hold
 * them one at a time and pause the session's socket under every other stream.
 */
function onStream(req: IncomingMessage, res: ServerResponse): void {
  serve((req.socket as TandemSocket)[kContext]!, req, res, performance.now());
}

/** Serves one request; the pipeline runs it when no earlier request of its connection is in flight. */
function serve(ctx: Connection, req: IncomingMessage, res: ServerResponse, start: number): void {
  const listener = (ctx.socket as Socket & { [kListener]?: Listener })[kListener]!;
  const plane = listener.plane;
  // Before anything can answer: every answer carries the id, and every log line.
  const requestId = requestIdOf(req);
  const traceId = traceOf(req);
  if (listener.retired) {
    res.shouldKeepAlive = false;
    const bytes = answerError(req, res, errors.LISTENER_REMOVED, '', true, requestId);
    // Logged, not counted: the connection's listener index may name another listener now.
    plane.observer.logged({
      req, ctx, route: null, backend: null, status: errors.LISTENER_REMOVED.status, start, bytes, received: 0, retries: 0,
      errorCode: errors.LISTENER_REMOVED.code, requestId, traceId, upgrade: false,
    });
    return;
  }
  const invalid = checkRequest(req);
  if (invalid !== null) {
    res.shouldKeepAlive = false;
    const bytes = answerError(req, res, invalid, '', true, requestId);
    answered(plane, req, ctx, null, start, invalid.status, bytes, invalid.code, requestId, traceId);
    return;
  }
  const gen = plane.generation;
  const asterisk = req.url === '*';
  const rt = gen.router.match(listener.index, req.headers.host, asterisk ? '/' : req.url!, req.method ?? 'GET', req.headers);
  // No keep-alive while stopping, or on a VIP about to move to another node.
  const closing = plane.shuttingDown || plane.vacancies.covers(ctx.socket);
  if (closing) res.shouldKeepAlive = false;
  if (asterisk && rt !== null) {
    // `OPTIONS *` asks about the server, not a resource, and undici cannot send it on:
    // tandem answers for the host it routes.
    res.writeHead(200, { 'content-length': 0, 'x-request-id': requestId });
    res.end();
    answered(plane, req, ctx, rt, start, 200, 0, null, requestId, traceId);
    return;
  }
  if (rt === null) {
    const bytes = answerError(req, res, errors.NO_ROUTE, '', closing, requestId);
    answered(plane, req, ctx, null, start, 404, bytes, errors.NO_ROUTE.code, requestId, traceId);
    return;
  }
  if (rt.actions !== null) {
    const own = rt.actions.answer(req, res, ctx, closing, requestId);
    if (own !== null) {
      answered(plane, req, ctx, rt, start, own.status, own.bytes, own.error, requestId, traceId);
      return;
    }
  }
  if (rt.limiter !== null) {
    const wait = rt.limiter.take(ctx.clientAddress);
    if (wait > 0) {
      const bytes = answerError(req, res, errors.RATE_LIMITED, '', closing, requestId, wait);
      answered(plane, req, ctx, rt, start, 429, bytes, errors.RATE_LIMITED.code, requestId, traceId);
      return;
    }
  }
  new ProxyRequest(req, res, rt, rt.pool, ctx, plane.observer, start, closing, requestId, traceId).run();
}

/** Reports one of tandem's own answers to a request (not proxied). */
function answered(plane: ListenerState, req: IncomingMessage, ctx: ForwardContext, route: RouteRuntime | null, start: number,
  status: number, bytes: number, errorCode: string | null, requestId: string, traceId: string | null): void {
  plane.observer.finished({ req, ctx, route, backend: null, status, start, bytes, received: 0, retries: 0, errorCode, requestId, traceId, upgrade: false });
}

function onClientError(this: TandemServer, err: Error & { code?: string }, socket: Duplex): void {
  clientError(this[kListener].plane, err, socket, (socket as TandemSocket)[kContext]);
}

function onUpgrade(this: TandemServer, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const start = performance.now();
  // Node takes its own error handler off a socket it hands over for an upgrade: without
  // one, a client resetting the connection would be an uncaught exception.
  socket.on('error', destroyOnError);
  const ctx = (req.socket as TandemSocket)[kContext]!;
  afterAnswers(ctx, () => upgrade(this[kListener], req, socket, head, ctx, start));
}

function upgrade(listener: Listener, req: IncomingMessage, socket: Duplex, head: Buffer, ctx: Connection, start: number): void {
  const plane = listener.plane;
  const requestId = requestIdOf(req);
  const traceId = traceOf(req);
  const refuse = (spec: ErrorSpec, route: RouteRuntime | null, pool: string) =>
    answeredRaw(plane, req, ctx, route, start, spec, writeRaw(socket, spec, pool, requestId), requestId, traceId);
  if (listener.retired) return refuse(errors.LISTENER_REMOVED, null, '');
  const invalid = checkRequest(req);
  if (invalid !== null) return refuse(invalid, null, '');
  const gen = plane.generation;
  const rt = gen.router.match(listener.index, req.headers.host, req.url ?? '/', req.method ?? 'GET', req.headers);
  if (rt === null) return refuse(errors.NO_ROUTE, null, '');
  if (rt.actions !== null && rt.actions.refuses(ctx)) {
    answeredRaw(plane, req, ctx, rt, start, errors.FORBIDDEN, refuseRaw(socket, requestId), requestId, traceId);
    return;
  }
  const sticky = rt.pool.sticky;
  const backend = (sticky === null ? null : sticky.lookup(req.headers.cookie)) ?? rt.pool.pool.pick();
  if (backend === null) return refuse(errors.NO_BACKEND, rt, rt.pool.name);
  // http-proxy-3 is loaded on the first upgrade: a data plane that never sees one keeps
  // its memory (a worker's whole budget is tight: it must stream 1 GiB under 150 MB).
  websocket ??= import('./websocket.ts');
  websocket.then((ws) => ws.proxyUpgrade({ req, socket, head, route: rt, backend, ctx, observer: plane.observer, start, requestId, traceId }),
    () => socket.destroy());
}

let websocket: Promise<typeof import('./websocket.ts')> | null = null;

function destroyOnError(this: Duplex): void {
  this.destroy();
}
