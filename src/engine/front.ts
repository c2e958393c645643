import { createServer, type Server, type Socket } from 'node:net';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import type { ListenerConfig } from '../config/types.ts';
import { errors, type ErrorSpec } from '../errors.ts';
import { admit, type Connection, type Serve } from '../dataplane/pipeline.ts';
import { rejectInFlight } from '../dataplane/forward.ts';
import { clientErrorSpec } from '../dataplane/client-errors.ts';
import { CROWDED_ABOVE, CROWDED_PARK_AFTER_MS, HTTPParser, METHODS, PARK_AFTER_MS, ParserPool, pauseRead, readAgain, readPaused, resumeRead, type Parser, type ParserCallbacks } from './llhttp.ts';
import { FastRequest, serializeHead, type BodyOwner } from './request.ts';
import { FastResponse, type ResponseOwner } from './response.ts';

// The client side of the fast engine: a node:net server whose connections llhttp parses
// consuming the socket's handle; each request goes to node:http's request path
// (server.ts's serve, through pipeline.ts: one at a time per connection) as a FastRequest
// and a FastResponse. This side does node:http's server's own work: the headers, request
// and keep-alive timeouts, 100-continue, 4xx answers to what llhttp refuses, and the
// hand-over of upgrades and CONNECT (WebSocket) to the listener's node:http server.

/** What the fast front needs of its listener (server.ts's Listener). */
export interface FrontHost {
  readonly config: ListenerConfig;
  /** The listener's node:http server: upgrades are handed to it with the connection. */
  readonly server: HttpServer;
  /** Sets up a new client connection's context (as for node:http's connections). */
  open(socket: Socket): Connection;
  readonly serve: Serve;
  /** Answers a request llhttp refused (after those in flight) and logs it. */
  refuse(conn: Connection, spec: ErrorSpec): void;
  /** A connection refused because maxConnections were open. */
  dropped(): void;
}

type Owned = Socket & { owner?: ClientConnection; _httpMessage?: FastResponse | null };

export class FastFront {
  readonly server: Server;
  readonly host: FrontHost;
  readonly connections: Set<ClientConnection>;
  /** Times a connection idle between requests gave its parser back (tandem_listener_parked_connections_total). */
  parked: number;
  private sweeper: NodeJS.Timeout | null;
  crowdSweeper: NodeJS.Timeout | null;

  constructor(host: FrontHost) {
    this.host = host;
    this.connections = new Set();
    this.parked = 0;
    this.sweeper = null;
    this.crowdSweeper = null;
    // allowHalfOpen: a client that sends its last request and shuts its side still gets the answers.
    this.server = createServer({ noDelay: true, allowHalfOpen: true }, (socket) => this.accept(socket));
    this.server.on('drop', () => host.dropped());
  }

  private accept(socket: Socket): void {
    const c = new ClientConnection(this, socket, this.host.open(socket));
    this.connections.add(c);
    if (this.sweeper === null) {
      const period = Math.min(1000, Math.max(100, Math.floor(this.host.config.headersTimeout / 4)));
      this.sweeper = setInterval(() => this.sweep(), period);
      this.sweeper.unref();
    }
  }

  /** The headers, request and keep-alive timeouts, checked on node:http's period. */
  private sweep(): void {
    const now = performance.now();
    const config = this.host.config;
    for (const c of this.connections) c.expire(now, config);
    if (this.connections.size === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper);
      this.sweeper = null;
    }
  }

  /** More than CROWDED_ABOVE parsers are held: connections idle CROWDED_PARK_AFTER_MS park, until fewer are held. */
  crowded(): void {
    this.crowdSweeper ??= setInterval(parkCrowded, CROWDED_PARK_AFTER_MS, this).unref();
  }

  /** Closes connections between requests (node:http's closeIdleConnections), after an answer still corked for this turn. */
  closeIdle(): void {
    for (const c of this.connections) if (c.idle()) c.socket.destroySoon();
  }
}

function parkCrowded(front: FastFront): void {
  const now = performance.now();
  for (const c of front.connections) if (c.idleSince !== 0 && now - c.idleSince >= CROWDED_PARK_AFTER_MS) c.park();
  if (parsers.held > CROWDED_ABOVE) return;
  clearInterval(front.crowdSweeper!);
  front.crowdSweeper = null;
}

/** Set only while a request with a body is read: one whole at its head needs no end-of-message call into JS. */
const ON_END = HTTPParser.kOnMessageComplete;
const callbacks: ParserCallbacks = { head: onRequestHead, body: onRequestBody, end: onRequestEnd, execute: onExecute };

/**
 * A connection idle PARK_AFTER_MS between requests gives its llhttp parser back and takes
 * one again when its next bytes arrive: most of an idle connection's memory is its parser.
 * A sweep does it, so a connection under load, idle for microseconds between requests,
 * does not pay for it (about 2 µs a park and wake). With more than CROWDED_ABOVE parsers
 * held, a second sweep parks connections idle CROWDED_PARK_AFTER_MS.
 */
const parsers = new ParserPool(HTTPParser.REQUEST, callbacks, 64);

export class ClientConnection implements BodyOwner, ResponseOwner {
  readonly front: FastFront;
  readonly socket: Owned;
  readonly ctx: Connection;
  /** null while the connection is parked: idle, its parser given back, its reads coming to JS. */
  parser: Parser | null;
  headers: string[];
  url: string;
  /** The request whose body llhttp is reading; null between requests. */
  parsing: FastRequest | null;
  /** performance.now() when the request being read began (its head's first bytes); 0: none. */
  started: number;
  /** performance.now() since when the connection waits for a next request; 0: not idle. */
  idleSince: number;
  /** Parser events of the current read; an upgrade head to hand over once answers owed are out. */
  events: number;
  handover: string | null;
  /** The upstream did not take more of the body yet. */
  bodyWait: boolean;
  /** The client shut its side: answer what was asked, then close. */
  ended: boolean;
  /** Nothing more is read (a refused request, a timeout, a handover): pipeline.ts's resume() must not restart reads. */
  halted: boolean;

  constructor(front: FastFront, socket: Socket, ctx: Connection) {
    this.front = front;
    this.socket = socket as Owned;
    this.socket.owner = this;
    this.ctx = ctx;
    this.headers = [];
    this.url = '';
    this.parsing = null;
    this.started = performance.now();
    this.idleSince = 0;
    this.events = 0;
    this.handover = null;
    this.bodyWait = false;
    this.ended = false;
    this.halted = false;
    this.parser = parsers.take(this, front.host.config.maxHeaderSize, socket);
    for (const [event, listener] of LISTENERS) socket.on(event, listener);
  }

  /** Stops reading for good. */
  halt(): void {
    this.halted = true;
    pauseRead(this.socket);
  }

  get keepAliveSeconds(): number {
    return Math.floor(this.front.host.config.keepAliveTimeout / 1000);
  }

  /** Between requests: nothing read of a next one, nothing owed. */
  idle(): boolean {
    return !this.ctx.busy && this.parsing === null && this.idleSince !== 0;
  }

  expire(now: number, config: ListenerConfig): void {
    if (this.socket.destroyed) return;
    if (this.idleSince !== 0) {
      if (now - this.idleSince >= config.keepAliveTimeout && !this.ctx.busy) this.socket.destroy();
      else if (now - this.idleSince >= PARK_AFTER_MS) this.park();
      return;
    }
    if (this.started === 0) return;
    const inBody = this.parsing !== null;
    const late = inBody ? config.requestTimeout > 0 && now - this.started >= config.requestTimeout
      : now - this.started >= config.headersTimeout;
    if (!late) return;
    this.started = 0;
    this.timedOut(inBody);
  }

  /** Gives the parser back while nothing is read, owed or held; reads come to onData until the next bytes. */
  park(): void {
    const socket = this.socket;
    if (this.parser === null || socket.destroyed || !this.idle() || this.handover !== null || this.halted || this.ended || this.bodyWait
      || socket._httpMessage != null || readPaused(socket) || (this.ctx.held !== null && this.ctx.held.length > 0)) return;
    parsers.give(this.parser!, socket);
    this.parser = null;
    this.front.parked++;
  }

  /** The first bytes after parking: a parser again, consuming the handle, then these bytes through it, as a read would be. */
  wake(chunk: Buffer): void {
    const p = parsers.take(this, this.front.host.config.maxHeaderSize, this.socket);
    this.parser = p;
    executed(this, p.execute(chunk), chunk);
  }

  /** The request being read took longer than the listener allows: 408, and the connection closes. */
  private timedOut(inBody: boolean): void {
    this.halt();
    const res = this.socket._httpMessage;
    if (inBody && res != null && res.req === this.parsing) {
      // The request is being served: its exchange answers (or is cut, if its answer began).
      if (res.headersSent) this.socket.destroy();
      else rejectInFlight(res as never, errors.REQUEST_TIMEOUT);
      return;
    }
    this.front.host.refuse(this.ctx, errors.REQUEST_TIMEOUT);
  }

  bodyStalled(): void {
    this.bodyWait = true;
    pauseRead(this.socket);
  }

  bodyFlowing(): void {
    if (!this.bodyWait) return;
    this.bodyWait = false;
    if (!this.halted && (this.ctx.held === null || this.ctx.held.length === 0)) resumeRead(this.socket);
  }

  /** A response ended: whether the connection goes on, and what it waits for next. */
  responded(res: FastResponse): void {
    const socket = this.socket;
    if (socket._httpMessage === res) socket._httpMessage = null;
    if (!res.shouldKeepAlive) {
      // Whatever else was sent is not answered (node:http likewise).
      if (this.ctx.held !== null) this.ctx.held.length = 0;
      this.ctx.broken = null;
      socket.end();
      return;
    }
    const more = this.ctx.held !== null && this.ctx.held.length > 0;
    if (more) return;
    if (this.handover !== null) {
      handOver(this);
      return;
    }
    if (this.ended && this.parsing === null) {
      socket.end();
      return;
    }
    if (this.parsing !== null || this.started !== 0) return;
    this.idleSince = performance.now();
    if (parsers.held > CROWDED_ABOVE) this.front.crowded();
  }
}

function ignore(): void {}

/** Data reached JS: the first bytes of a parked connection, else the parser did not take the handle over, which the engine relies on. */
function onData(this: Owned, chunk: Buffer): void {
  const c = this.owner;
  if (c !== undefined && c.parser === null) c.wake(chunk);
  else this.destroy(new Error('socket data bypassed the parser'));
}

function onPause(this: Owned): void {
  pauseRead(this);
}

function onResume(this: Owned): void {
  const c = this.owner;
  if (c !== undefined && !c.halted && !c.bodyWait) resumeRead(this);
}

function onDrain(this: Owned): void {
  const res = this._httpMessage;
  if (res != null) res.emit('drain');
}

function onEnd(this: Owned): void {
  const c = this.owner!;
  c.ended = true;
  // A request cut short by the client's end (a body, or a head, not all sent) is malformed,
  // as node:http's parser.finish() finds it: the exchange in flight must not wait for the rest.
  if (!this.writableEnded && !this.destroyed && c.parser !== null && (c.parsing !== null || c.started !== 0)) {
    const ret = c.parser.finish();
    if (ret instanceof Error) {
      malformed(c, ret as Error & { code?: string }, null);
      return;
    }
  }
  if (!c.ctx.busy && c.handover === null) this.end();
}

function onClose(this: Owned): void {
  const c = this.owner!;
  c.front.connections.delete(c);
  const res = this._httpMessage;
  this._httpMessage = null;
  if (res != null) res.aborted();
  // Held requests are dropped by the pipeline, which sees the socket destroyed.
  c.handover = null;
  if (c.parser !== null) parsers.release(c.parser, null);
  c.parser = null;
}

function onRequestHead(this: Parser, major: number, minor: number, headers: string[] | undefined, method: number,
  url: string | undefined, _status: number, _message: string | undefined, upgrade: boolean, keepAlive: boolean): number {
  const c = this.owner as ClientConnection | null;
  if (c === null) return 0;
  c.events++;
  if (headers === undefined) {
    headers = c.headers;
    url = c.url + (url ?? '');
    c.headers = [];
    c.url = '';
  }
  const socket = c.socket;
  // After a Connection: close answer, nothing more is read.
  if (socket.writableEnded || socket.destroyed) {
    c.halt();
    return 0;
  }
  const start = c.started === 0 ? performance.now() : c.started;
  c.idleSince = 0;
  const name = METHODS[method];
  if (upgrade) {
    // WebSocket (or CONNECT, or an upgrade node:http serves as a plain request): node:http
    // takes the connection over once what is owed on it is answered.
    c.handover = serializeHead(name, url ?? '/', major, minor, headers);
    return 0;
  }
  const req = new FastRequest(c, socket, name, url ?? '/', headers, major, minor);
  c.parsing = req.complete ? null : req;
  if (req.complete) c.started = 0;
  const end = req.complete ? undefined : onRequestEnd;
  if (this[ON_END] !== end) this[ON_END] = end;
  const res = new FastResponse(c, req, keepAlive);
  admit(c.ctx, req as never, res as never, start, serveFast);
  return 0;
}

/** Runs when the pipeline serves the request: 100-continue as node:http does, then the request path. */
function serveFast(conn: Connection, req: IncomingMessage, res: ServerResponse, start: number): void {
  const r = req as unknown as FastRequest;
  const response = res as unknown as FastResponse;
  const c = (conn.socket as Owned).owner!;
  c.socket._httpMessage = response;
  const expect = r.headers.expect;
  if (expect !== undefined && r.httpVersionMajor === 1 && r.httpVersionMinor === 1) {
    if (expect.toLowerCase() !== '100-continue') {
      response.shouldKeepAlive = false;
      response.writeHead(417, { 'content-length': 0 });
      response.end();
      return;
    }
    if (!r.complete) c.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
  }
  c.front.host.serve(conn, req, res, start);
}

function onRequestBody(this: Parser, chunk: Buffer): void {
  const c = this.owner as ClientConnection | null;
  if (c === null) return;
  c.events++;
  const req = c.parsing;
  if (req !== null && !req.push(chunk)) c.bodyStalled();
}

function onRequestEnd(this: Parser): void {
  const c = this.owner as ClientConnection | null;
  if (c === null) return;
  c.events++;
  c.started = 0;
  const req = c.parsing;
  if (req === null) return;
  c.parsing = null;
  req.finish();
}

function onExecute(this: Parser, ret: number | Error): void {
  const c = this.owner as ClientConnection | null;
  if (c !== null) executed(c, ret, null);
}

/** After llhttp parsed a read: `chunk`, or with null the read the parser took from the handle. */
function executed(c: ClientConnection, ret: number | Error, chunk: Buffer | null): void {
  const events = c.events;
  c.events = 0;
  if (typeof ret !== 'number') {
    malformed(c, ret as Error & { code?: string }, chunk);
    return;
  }
  if (c.handover !== null) {
    // llhttp stopped at the end of the upgrade head: the rest is the new protocol's.
    const rest = (chunk ?? c.parser!.getCurrentBuffer()).subarray(ret);
    c.handover += rest.toString('latin1');
    c.halt();
    if (!c.ctx.busy) handOver(c);
    return;
  }
  // Bytes of a next request's head, and no event yet: its headers timeout runs from now.
  if (events === 0 && ret > 0 && c.started === 0 && c.parsing === null) {
    c.started = performance.now();
    c.idleSince = 0;
  }
}

/** llhttp refused what the client sent: the right 4xx, after the answers owed, and the connection closes. */
function malformed(c: ClientConnection, err: Error & { code?: string }, chunk: Buffer | null): void {
  c.halt();
  if (err.code === 'ECONNRESET' || c.socket.destroyed) {
    c.socket.destroy();
    return;
  }
  const spec = clientErrorSpec(err.code, chunk ?? c.parser!.getCurrentBuffer());
  const req = c.parsing;
  c.parsing = null;
  const res = c.socket._httpMessage;
  if (req !== null && res != null && res.req === req) {
    // The error is in the body of the request being served.
    if (res.headersSent) c.socket.destroy();
    else rejectInFlight(res as never, spec);
    return;
  }
  if (req !== null && c.ctx.held !== null) {
    // In the body of a request still held: it is not served.
    const i = c.ctx.held.findIndex((h) => (h.req as unknown) === req);
    if (i !== -1) c.ctx.held.splice(i, 1);
  }
  c.front.host.refuse(c.ctx, spec);
}

/**
 * A client socket's listeners while the engine serves it. pipeline.ts holds requests
 * behind the one in flight with socket.pause(), which does not stop a consumed handle:
 * as node:http does, 'pause' and 'resume' stop and start it.
 */
const LISTENERS: readonly [string, (this: Owned, ...args: any[]) => void][] = [
  ['data', onData], ['drain', onDrain], ['end', onEnd], ['error', ignore], ['close', onClose], ['pause', onPause], ['resume', onResume],
];

/** Gives the connection, and the upgrade head it sent, to the listener's node:http server. */
function handOver(c: ClientConnection): void {
  const head = c.handover!;
  const socket = c.socket;
  if (socket.destroyed) return;
  c.front.connections.delete(c);
  for (const [event, listener] of LISTENERS) socket.removeListener(event, listener);
  socket.owner = undefined;
  socket._httpMessage = null;
  parsers.release(c.parser!, socket);
  c.parser = null;
  readAgain(socket);
  socket.unshift(Buffer.from(head, 'latin1'));
  c.front.host.server.emit('connection', socket);
}
