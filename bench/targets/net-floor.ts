// The node:net floor: the least a reverse proxy on Node can do below node:http and undici.
// Sockets from node:net, both directions parsed by llhttp through Node's own binding
// (the parser node:http uses), the request head re-serialised as one string with
// X-Forwarded-For added, bodies (Content-Length or chunked) streamed both ways with
// backpressure, one keep-alive upstream pool per backend, the response head sent in
// the same write as the first body bytes. No routing, health, metrics or timeouts: a
// measurement of what an engine of this shape could reach (issue 16), not product code.
//
//   node bench/targets/net-floor.ts http://127.0.0.1:PORT [more upstreams]   # prints {"port":N}
//
// Hot-path shape as in undici: module-level callbacks that find their connection through
// `this` (the parser or the socket), no closures or promises per request. As node:http's
// server does, each parser consumes its socket's handle: reads go from libuv straight into
// llhttp in C++, without a Buffer and a 'data' event per read (16-18% less CPU per request
// than socket.on('data') + parser.execute() in an A/B run on the benchmark's origin). That
// takes two internals, `_handle` and `consume`, both what node:http itself relies on.

import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
// Node's llhttp binding as tandem's engine reaches it (`_http_common`, no deprecation warning).
import { HTTPParser, METHODS as methods, type HeadersComplete, type Parser } from '../../src/engine/llhttp.ts';

/** Idle upstream connections kept per backend; beyond this a released one is closed. */
const MAX_IDLE = 128;
const CRLF = '\r\n';
const LAST_CHUNK = '0\r\n\r\n';

type Owned<T> = Socket & { owner: T };

/** One request from arrival of its head to the end of its response. */
class Exchange {
  readonly client: ClientConn;
  readonly head: string;
  /** The request body is chunked: decoded by llhttp, so re-encoded upstream. */
  readonly chunked: boolean;
  readonly isHead: boolean;
  /** Whether the client connection stays open after this response. */
  keepAlive: boolean;
  readonly http10: boolean;
  /** Body chunks that arrived before an upstream connection was attached. */
  pending: Buffer[];
  bodyDone: boolean;
  bodyWritten: boolean;
  upstream: UpstreamConn | null;
  /** The final response head went to the client. */
  responded: boolean;
  done: boolean;
  retried: boolean;

  constructor(client: ClientConn, head: string, chunked: boolean, isHead: boolean, keepAlive: boolean, http10: boolean) {
    this.client = client;
    this.head = head;
    this.chunked = chunked;
    this.isHead = isHead;
    this.keepAlive = keepAlive;
    this.http10 = http10;
    this.pending = [];
    this.bodyDone = false;
    this.bodyWritten = false;
    this.upstream = null;
    this.responded = false;
    this.done = false;
    this.retried = false;
  }
}

class ClientConn {
  readonly socket: Owned<ClientConn>;
  readonly parser: Parser;
  readonly ip: string;
  /** Requests in arrival order; the first is the one being answered. Pipelined ones wait. */
  readonly queue: Exchange[];
  /** The request whose body llhttp is reading. */
  parsing: Exchange | null;
  /** Head fields that llhttp handed over before the head was complete (long heads). */
  headers: string[];
  url: string;
  /** Paused because the upstream connection did not take the request body yet. */
  bodyWait: boolean;
  ended: boolean;
  closed: boolean;

  constructor(socket: Socket) {
    this.socket = socket as Owned<ClientConn>;
    this.socket.owner = this;
    this.parser = consumingParser(socket, this, HTTPParser.REQUEST, onRequestHead, onRequestBody, onRequestEnd, onClientExecute);
    this.ip = socket.remoteAddress ?? '';
    this.queue = [];
    this.parsing = null;
    this.headers = [];
    this.url = '';
    this.bodyWait = false;
    this.ended = false;
    this.closed = false;
  }
}

class UpstreamConn {
  readonly pool: Pool;
  readonly socket: Owned<UpstreamConn>;
  readonly parser: Parser;
  ex: Exchange | null = null;
  /** Came from the idle list: a close before any answer may be a stale connection, worth one retry. */
  reused: boolean = false;
  answered: boolean = false;
  /** The response body is re-encoded as chunks (llhttp hands it over decoded). */
  chunked: boolean = false;
  keepAlive: boolean = false;
  informational: boolean = false;
  paused: boolean = false;
  headers: string[] = [];
  url: string = '';
  corked: Socket | null = null;

  constructor(pool: Pool) {
    this.pool = pool;
    this.socket = connect({ host: pool.host, port: pool.port, noDelay: true }) as Owned<UpstreamConn>;
    this.socket.owner = this;
    // Never called while the parser consumes the handle; a listener keeps the stream flowing, so 'end' is emitted.
    this.socket.on('data', notConsumed);
    this.socket.on('drain', onUpstreamDrain);
    this.socket.on('end', onUpstreamEnd);
    this.socket.on('error', ignore);
    this.socket.on('close', onUpstreamClose);
    this.parser = consumingParser(this.socket, this, HTTPParser.RESPONSE, onResponseHead, onResponseBody, onResponseEnd, onUpstreamExecute);
  }
}

/** Keep-alive connections to one backend: a stack of idle ones, a new one when it is empty. */
class Pool {
  readonly host: string;
  readonly port: number;
  readonly idle: UpstreamConn[];

  constructor(url: string) {
    const u = new URL(url);
    this.host = u.hostname;
    this.port = Number(u.port || 80);
    this.idle = [];
  }

  acquire(): UpstreamConn {
    const u = this.idle.pop();
    if (u === undefined) return new UpstreamConn(this);
    u.reused = true;
    return u;
  }

  release(u: UpstreamConn): void {
    if (u.paused) {
      u.paused = false;
      resumeRead(u.socket);
    }
    if (this.idle.length >= MAX_IDLE) u.socket.destroy();
    else this.idle.push(u);
  }

  remove(u: UpstreamConn): void {
    const i = this.idle.indexOf(u);
    if (i !== -1) this.idle.splice(i, 1);
  }
}

function ignore(): void {}

/** A parser of `type` that reads `socket`'s handle itself and calls back with `this` = the parser. */
function consumingParser(socket: Socket, owner: ClientConn | UpstreamConn, type: number, head: HeadersComplete,
  body: (this: Parser, chunk: Buffer) => void, end: (this: Parser) => void, execute: (this: Parser, ret: number | Error) => void): Parser {
  const p = new HTTPParser();
  p.initialize(type, {}, 0, 0);
  p.owner = owner;
  p[HTTPParser.kOnHeaders] = onHeaders;
  p[HTTPParser.kOnHeadersComplete] = head;
  p[HTTPParser.kOnBody] = body;
  p[HTTPParser.kOnMessageComplete] = end;
  p[HTTPParser.kOnExecute] = execute;
  p.consume((socket as unknown as { _handle: unknown })._handle);
  return p;
}

/** Data reached JS: the parser did not take over the handle, which this script relies on. */
function notConsumed(this: Socket): void {
  this.destroy(new Error('socket data bypassed the parser'));
}

// With the parser consuming the handle, Readable's pause() no longer stops reads.
function pauseRead(s: Socket): void {
  (s as unknown as { stopped: boolean }).stopped = true;
  (s as unknown as { _handle: { readStop(): void } | null })._handle?.readStop();
}

function resumeRead(s: Socket): void {
  (s as unknown as { stopped: boolean }).stopped = false;
  (s as unknown as { _handle: { readStart(): void } | null })._handle?.readStart();
}

function onClientExecute(this: Parser, ret: number | Error): void {
  const c = this.owner as ClientConn;
  if (typeof ret !== 'number' && !c.closed && !c.socket.writableEnded) {
    if (c.queue.length === 0) c.socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n', 'latin1');
    else c.socket.destroy();
  }
}

function onUpstreamExecute(this: Parser, ret: number | Error): void {
  const u = this.owner as UpstreamConn;
  u.answered = true;
  if (u.corked !== null) {
    u.corked.uncork();
    u.corked = null;
  }
  if (typeof ret !== 'number') u.socket.destroy();
}

function isHopByHop(name: string): boolean {
  // Length first: most names are rejected without a lowercase copy.
  if (name.length !== 10 && name.length !== 16) return false;
  const l = name.toLowerCase();
  return l === 'connection' || l === 'keep-alive' || l === 'proxy-connection';
}

function isName(name: string, lower: string): boolean {
  return name.length === lower.length && name.toLowerCase() === lower;
}

function onHeaders(this: Parser, headers: string[], url: string): void {
  const o = this.owner!;
  for (let i = 0; i < headers.length; i++) o.headers.push(headers[i]);
  o.url += url;
}

// ---- client side -------------------------------------------------------------------

function onRequestHead(this: Parser, major: number, minor: number, headers: string[] | undefined, method: number,
  url: string | undefined, _status: number, _message: string | undefined, upgrade: boolean, keepAlive: boolean): number {
  const c = this.owner as ClientConn;
  // After a Connection: close answer, whatever else the client sends is not served.
  if (c.socket.writableEnded) return 0;
  if (headers === undefined) {
    headers = c.headers;
    url = c.url + (url ?? '');
    c.headers = [];
    c.url = '';
  }
  if (upgrade) {
    // Upgrades and CONNECT are out of scope for a floor.
    c.socket.destroy();
    return 0;
  }
  const name = methods[method];
  let head = name + ' ' + url + ' HTTP/1.1\r\n';
  let chunked = false;
  for (let i = 0; i < headers.length; i += 2) {
    const h = headers[i];
    if (isHopByHop(h)) continue;
    if (isName(h, 'transfer-encoding')) chunked = true;
    head += h + ': ' + headers[i + 1] + CRLF;
  }
  head += 'X-Forwarded-For: ' + c.ip + '\r\n\r\n';
  const ex = new Exchange(c, head, chunked, name === 'HEAD', keepAlive, major === 1 && minor === 0);
  c.parsing = ex;
  c.queue.push(ex);
  if (c.queue.length === 1) dispatch(ex);
  // A pipelined request waits for the one before it; stop reading until it is answered.
  else pauseRead(c.socket);
  return 0;
}

function onRequestBody(this: Parser, chunk: Buffer): void {
  const c = this.owner as ClientConn;
  const ex = c.parsing;
  if (ex === null || ex.done) return;
  if (ex.upstream === null) {
    ex.pending.push(chunk);
    return;
  }
  if (!writeRequestBody(ex, ex.upstream, chunk)) {
    c.bodyWait = true;
    pauseRead(c.socket);
  }
}

function onRequestEnd(this: Parser): void {
  const c = this.owner as ClientConn;
  const ex = c.parsing;
  if (ex === null) return;
  c.parsing = null;
  ex.bodyDone = true;
  if (ex.chunked && ex.upstream !== null && !ex.done) ex.upstream.socket.write(LAST_CHUNK, 'latin1');
}

function writeRequestBody(ex: Exchange, u: UpstreamConn, chunk: Buffer): boolean {
  ex.bodyWritten = true;
  if (!ex.chunked) return u.socket.write(chunk);
  u.socket.cork();
  u.socket.write(chunk.length.toString(16) + CRLF, 'latin1');
  u.socket.write(chunk);
  const ok = u.socket.write(CRLF, 'latin1');
  u.socket.uncork();
  return ok;
}

function onClientDrain(this: Owned<ClientConn>): void {
  const u = this.owner.queue.length > 0 ? this.owner.queue[0].upstream : null;
  if (u !== null && u.paused) {
    u.paused = false;
    resumeRead(u.socket);
  }
}

function onClientEnd(this: Owned<ClientConn>): void {
  const c = this.owner;
  c.ended = true;
  if (c.queue.length === 0) this.end();
}

function onClientClose(this: Owned<ClientConn>): void {
  const c = this.owner;
  c.closed = true;
  for (const ex of c.queue) {
    ex.done = true;
    const u = ex.upstream;
    if (u !== null) {
      // Its response is still coming: the connection cannot serve anyone else.
      u.ex = null;
      ex.upstream = null;
      u.socket.destroy();
    }
  }
  c.queue.length = 0;
}

/** Resumes reading from the client once no reason to pause is left. */
function maybeResume(c: ClientConn): void {
  if (!c.closed && !c.bodyWait && c.queue.length <= 1 && (c.socket as unknown as { stopped: boolean }).stopped) resumeRead(c.socket);
}

// ---- upstream side -----------------------------------------------------------------

let nextPool = 0;

function dispatch(ex: Exchange): void {
  const pool = pools[nextPool];
  nextPool = (nextPool + 1) % pools.length;
  const u = pool.acquire();
  u.ex = ex;
  u.answered = false;
  u.informational = false;
  ex.upstream = u;
  const s = u.socket;
  // Head, buffered body and last chunk in one writev.
  s.cork();
  s.write(ex.head, 'latin1');
  let ok = true;
  for (const chunk of ex.pending) ok = writeRequestBody(ex, u, chunk);
  ex.pending = [];
  if (ex.bodyDone && ex.chunked) s.write(LAST_CHUNK, 'latin1');
  s.uncork();
  if (!ok && !ex.bodyDone) {
    ex.client.bodyWait = true;
    pauseRead(ex.client.socket);
  }
}

function onResponseHead(this: Parser, _major: number, _minor: number, headers: string[] | undefined, _method: number,
  _url: string | undefined, status: number, message: string | undefined, upgrade: boolean, keepAlive: boolean): number {
  const u = this.owner as UpstreamConn;
  const ex = u.ex;
  if (ex === null) {
    // Bytes nobody asked for: the connection is out of step. -1 stops llhttp here.
    u.socket.destroy();
    return -1;
  }
  if (headers === undefined) {
    headers = u.headers;
    u.headers = [];
    u.url = '';
  }
  if (upgrade) {
    ex.client.socket.destroy();
    u.socket.destroy();
    return 0;
  }
  let head = 'HTTP/1.1 ' + status + ' ' + (message ?? '') + CRLF;
  if (status < 200) {
    // 100 Continue and friends: passed on, the final answer follows on the same connection.
    for (let i = 0; i < headers.length; i += 2) head += headers[i] + ': ' + headers[i + 1] + CRLF;
    ex.client.socket.write(head + CRLF, 'latin1');
    u.informational = true;
    return 0;
  }
  const bodyless = ex.isHead || status === 204 || status === 304;
  let framed = bodyless;
  let chunked = false;
  for (let i = 0; i < headers.length; i += 2) {
    const h = headers[i];
    if (isHopByHop(h)) continue;
    if (isName(h, 'transfer-encoding')) {
      framed = true;
      chunked = true;
      if (ex.http10) continue;
    } else if (isName(h, 'content-length')) {
      framed = true;
    }
    head += h + ': ' + headers[i + 1] + CRLF;
  }
  if (!framed) {
    // Delimited by the origin closing: chunked keeps the client connection reusable.
    chunked = true;
    if (!ex.http10) head += 'Transfer-Encoding: chunked\r\n';
  }
  // An HTTP/1.0 client cannot read chunks: the body goes as it is, ended by our close.
  if (chunked && ex.http10) {
    chunked = false;
    ex.keepAlive = false;
  }
  if (!ex.keepAlive) head += 'Connection: close\r\n';
  else if (ex.http10) head += 'Connection: keep-alive\r\n';
  u.chunked = chunked && !bodyless;
  u.keepAlive = keepAlive;
  ex.responded = true;
  // Corked until this read is parsed (onUpstreamExecute): the head joins the first body bytes.
  if (u.corked === null) {
    u.corked = ex.client.socket;
    u.corked.cork();
  }
  ex.client.socket.write(head + CRLF, 'latin1');
  // 1 tells llhttp that no body follows (HEAD); 204 and 304 it knows itself.
  return ex.isHead ? 1 : 0;
}

function onResponseBody(this: Parser, chunk: Buffer): void {
  const u = this.owner as UpstreamConn;
  if (u.ex === null) return;
  const out = u.ex.client.socket;
  let ok: boolean;
  if (u.chunked) {
    out.write(chunk.length.toString(16) + CRLF, 'latin1');
    out.write(chunk);
    ok = out.write(CRLF, 'latin1');
  } else {
    ok = out.write(chunk);
  }
  if (!ok && !u.paused) {
    u.paused = true;
    pauseRead(u.socket);
  }
}

function onResponseEnd(this: Parser): void {
  const u = this.owner as UpstreamConn;
  if (u.informational) {
    u.informational = false;
    return;
  }
  const ex = u.ex;
  if (ex === null) return;
  const c = ex.client;
  if (u.chunked) c.socket.write(LAST_CHUNK, 'latin1');
  u.ex = null;
  ex.upstream = null;
  ex.done = true;
  // Reusable only when both messages ended cleanly.
  if (u.keepAlive && ex.bodyDone) u.pool.release(u);
  else u.socket.destroy();
  c.queue.shift();
  if (!ex.keepAlive || !ex.bodyDone) {
    c.socket.end();
    return;
  }
  if (c.queue.length > 0) dispatch(c.queue[0]);
  else if (c.ended) c.socket.end();
  maybeResume(c);
}

function onUpstreamDrain(this: Owned<UpstreamConn>): void {
  const ex = this.owner.ex;
  if (ex !== null && ex.client.bodyWait) {
    ex.client.bodyWait = false;
    maybeResume(ex.client);
  }
}

function onUpstreamEnd(this: Owned<UpstreamConn>): void {
  // A body delimited by the close ends here.
  if (this.owner.ex !== null) this.owner.parser.finish();
}

function onUpstreamClose(this: Owned<UpstreamConn>): void {
  const u = this.owner;
  u.pool.remove(u);
  const ex = u.ex;
  if (ex === null) return;
  u.ex = null;
  ex.upstream = null;
  if (!u.answered && u.reused && !ex.bodyWritten && !ex.retried) {
    // An idle connection the origin closed as we picked it: once more on a fresh one.
    ex.retried = true;
    dispatch(ex);
    return;
  }
  ex.done = true;
  if (ex.responded) ex.client.socket.destroy();
  else ex.client.socket.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n', 'latin1');
}

// ---- start -------------------------------------------------------------------------

const upstreams = process.argv.slice(2);
if (upstreams.length === 0) {
  process.stderr.write('usage: node bench/targets/net-floor.ts http://HOST:PORT [...]\n');
  process.exit(1);
}
const pools = upstreams.map((url) => new Pool(url));

function onConnection(socket: Socket): void {
  const c = new ClientConn(socket);
  socket.on('data', notConsumed);
  socket.on('drain', onClientDrain);
  socket.on('end', onClientEnd);
  socket.on('error', ignore);
  socket.on('close', onClientClose);
  void c;
}

// allowHalfOpen: a client that sends its last request and shuts down its side still gets the answers.
const server = createServer({ noDelay: true, allowHalfOpen: true }, onConnection);
server.listen({ host: '127.0.0.1', port: 0 }, () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
