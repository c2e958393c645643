import { Agent as HttpAgent, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { connect as tcpConnect, type NetConnectOpts, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import type { Duplex } from 'node:stream';
import { createProxyServer, type ServerOptions } from 'http-proxy-3';
import { errors } from '../errors.ts';
import type { Backend } from '../pool/backend.ts';
import type { RouteRuntime } from './generation.ts';
import type { ForwardContext } from './headers.ts';
import { proxyHeaderFor } from './private-upstreams.ts';
import type { Exchange, RequestObserver } from './exchange.ts';
import { writeRaw } from './own-answers.ts';

// WebSocket and other Upgrade requests go through http-proxy-3. Each upgraded session
// gets a fresh upstream connection (no agent): an upgraded socket is never reusable, and
// a backend that answers the upgrade with a plain response must leave nothing open.
// A session is logged once, when the client connection closes: status 101 with its
// duration and the bytes each way, or the status the upgrade was answered with.
const proxy = createProxyServer({ ws: true, xfwd: false, agent: false as unknown as undefined });

const kSession = Symbol('tandem.ws');
type SessionSocket = Socket & { [kSession]?: Session };

/** One upgrade request, as the listener routed it. */
export interface Upgrade {
  readonly req: IncomingMessage;
  readonly socket: Duplex;
  readonly head: Buffer;
  readonly route: RouteRuntime;
  readonly backend: Backend;
  readonly ctx: ForwardContext;
  readonly observer: RequestObserver;
  /** performance.now() when the upgrade request arrived. */
  readonly start: number;
  readonly requestId: string;
  readonly traceId: string | null;
}

/** An upgrade and, once the backend accepted it, the session: what its access log line says. */
class Session implements Exchange {
  readonly req: IncomingMessage;
  readonly ctx: ForwardContext;
  readonly route: RouteRuntime;
  readonly backend: Backend;
  readonly start: number;
  readonly requestId: string;
  readonly traceId: string | null;
  readonly upgrade = true;
  readonly retries = 0;
  status = 0;
  bytes = 0;
  received = 0;
  errorCode: string | null = null;
  private readonly socket: Socket;
  private readonly observer: RequestObserver;
  /** The client socket's bytesRead before the first byte after the upgrade request's head. */
  private readonly readBase: number;
  /** The backend connection after a 101, and its bytesRead before the first byte after the 101's head. */
  private upstream: Socket | null = null;
  private upstreamBase = 0;

  constructor(u: Upgrade) {
    this.req = u.req;
    this.ctx = u.ctx;
    this.route = u.route;
    this.backend = u.backend;
    this.start = u.start;
    this.requestId = u.requestId;
    this.traceId = u.traceId;
    this.socket = u.socket as Socket;
    this.observer = u.observer;
    // `head` is what the client sent after the request head, read with it.
    this.readBase = (this.socket.bytesRead ?? 0) - u.head.length;
  }

  /** The backend switched protocols: the client gets its 101 with the request id. */
  switched(res: IncomingMessage, upstream: Socket, upstreamHead: Buffer): void {
    this.status = 101;
    res.headers['x-request-id'] = this.requestId;
    this.upstream = upstream;
    this.upstreamBase = upstream.bytesRead - upstreamHead.length;
    this.observer.switched(this);
  }

  /** The backend answered the upgrade with a plain response, which goes back to the client. */
  refused(res: IncomingMessage): void {
    this.status = res.statusCode ?? 502;
    res.headers['x-request-id'] = this.requestId;
    res.on('data', (chunk: Buffer) => {
      this.bytes += chunk.length;
    });
  }

  /** The upstream request failed before the backend answered (then `bytes` is tandem's 502), or the session broke. */
  failed(bytes: number): void {
    if (this.status === 0) {
      this.status = errors.UPGRADE_FAILED.status;
      this.errorCode = errors.UPGRADE_FAILED.code;
      this.bytes = bytes;
    } else if (this.status === 101) {
      this.errorCode = errors.BACKEND_RESET.code;
    }
  }

  /** The client connection closed: the line is written. */
  ended(): void {
    if (this.status === 101) {
      this.bytes = this.upstream!.bytesRead - this.upstreamBase;
      this.received = (this.socket.bytesRead ?? 0) - this.readBase;
    }
    // 499: the client went away before the backend answered (nginx's code).
    if (this.status === 0) this.status = 499;
    this.observer.logged(this);
  }
}

proxy.on('proxyReqWs', (proxyReq: ClientRequest, _req: IncomingMessage, socket: SessionSocket) => {
  const session = socket[kSession];
  if (session === undefined) return;
  // Registered before http-proxy-3's own listeners, so these run first: the 101 or the
  // plain answer it writes to the client carries the request id.
  proxyReq.once('upgrade', (res: IncomingMessage, upstream: Socket, upstreamHead: Buffer) => session.switched(res, upstream, upstreamHead));
  proxyReq.once('response', (res: IncomingMessage) => session.refused(res));
});

proxy.on('error', (err: Error, _req: unknown, target: unknown) => {
  const socket = target as SessionSocket;
  const session = socket[kSession];
  if (session === undefined || typeof socket.write !== 'function') return;
  // Nothing answered yet: the client still waits for an answer to its upgrade request.
  if (session.status === 0 && socket.writable) {
    session.failed(writeRaw(socket, errors.UPGRADE_FAILED, session.route.pool.name, session.requestId));
  } else {
    session.failed(0);
    socket.destroy();
  }
  void err;
});

/** Proxies one Upgrade request to its backend, with the same forwarding headers as HTTP. */
export function proxyUpgrade(u: Upgrade): void {
  const { req, socket, ctx, backend } = u;
  const pool = u.route.pool;
  const h = req.headers;
  const xff = h['x-forwarded-for'];
  h['x-forwarded-for'] = ctx.trusted && xff ? `${xff}, ${ctx.clientAddress}` : ctx.clientAddress;
  if (!(ctx.trusted && h['x-forwarded-proto'])) h['x-forwarded-proto'] = ctx.proto;
  if (!(ctx.trusted && h['x-forwarded-host']) && h.host !== undefined) h['x-forwarded-host'] = h.host;
  h.via = h.via ? `${h.via}, 1.1 tandem` : '1.1 tandem';
  h['x-request-id'] = u.requestId;
  if (u.traceId === null) {
    delete h.traceparent;
    delete h.tracestate;
  }
  if (pool.hostFromBackend) h.host = backend.hostHeader;
  else if (pool.hostOverride !== null) h.host = pool.hostOverride;
  for (const name of ['proxy-connection', 'proxy-authorization', 'keep-alive', 'te', 'trailer']) delete h[name];

  const session = new Session(u);
  (socket as SessionSocket)[kSession] = session;
  // Counted on the backend, not the pool: a session has its own connection, so it must
  // not keep a pool a reload replaced (and its connections) open for hours.
  backend.active++;
  socket.once('close', () => {
    backend.active--;
    session.ended();
  });
  proxy.ws(req, socket as Socket, u.head, {
    target: backend.config.origin,
    proxyTimeout: pool.config.responseTimeout,
    connectTimeout: pool.config.connectTimeout,
    ...(backend.proxyVersion === null ? {} : { agent: sendingHeader(backend, proxyHeaderFor(ctx, backend)) }),
  } as ServerOptions);
}

/**
 * An agent for one session's connection that opens with the PROXY header (before the TLS
 * handshake to an https:// backend). One per upgrade: the connection is the session's own.
 */
function sendingHeader(backend: Backend, header: Buffer): HttpAgent {
  const secure = backend.config.protocol === 'https:';
  const agent = secure ? new HttpsAgent({ keepAlive: false }) : new HttpAgent({ keepAlive: false });
  agent.createConnection = (options: NetConnectOpts & ConnectionOptions) => {
    const tcp = tcpConnect({ ...options, port: backend.config.port, host: backend.config.host } as NetConnectOpts);
    tcp.write(header);
    return secure ? tlsConnect({ ...options, socket: tcp }) : tcp;
  };
  return agent;
}
