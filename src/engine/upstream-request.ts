import type { Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import { pauseRead, resumeRead } from './llhttp.ts';
import { corkTurn } from './write-batch.ts';
import type { BodySink, FastRequest } from './request.ts';
import type { FastUpstream, UpstreamConnection } from './upstream.ts';

// One exchange with a backend on the fast engine: the request head written as one string,
// the body streamed from the client's FastRequest as llhttp reads it (re-chunked when the
// client sent it chunked), and the answer handed to forward.ts's handler. It is also the
// handler's controller (pause, resume, abort) and carries the exchange's deadlines: the
// response head within headersTimeout of the request, each body read within bodyTimeout
// of the last (undici's timeouts, under undici's error codes).

const CRLF = '\r\n';
const LAST_CHUNK = '0\r\n\r\n';
/** Methods whose empty body undici announces with Content-Length: 0. */
const PAYLOAD_METHODS = new Set(['PUT', 'POST', 'PATCH', 'QUERY', 'PROPFIND', 'PROPPATCH']);

/**
 * Exchanges with a deadline, each at its `slot`: leaving swaps the last one in. Not a Set:
 * a Set's table, rehashed as exchanges come and go, leaves its old table pointing at
 * exchanges long over, and once that table is promoted every scavenge keeps them (and all
 * they hold) alive until a full collection: 10 MB promoted per scavenge at 36k req/s.
 */
const timed: UpstreamRequest[] = [];
let sweeper: NodeJS.Timeout | null = null;
/** Deadlines are checked this often: a timeout fires within this much of its time. */
const SWEEP_MS = 25;
/** performance.now() as of the last sweep: deadlines are set from it, not a clock read per body read. */
let clock = 0;

function now(): number {
  return sweeper === null ? (clock = performance.now()) : clock;
}

export class UpstreamRequest implements Dispatcher.DispatchController, BodySink {
  readonly upstream: FastUpstream;
  readonly handler: Dispatcher.DispatchHandler;
  readonly method: string;
  readonly servername: string | undefined;
  readonly body: FastRequest | null;
  private head: string | null;
  private readonly chunked: boolean;
  conn: UpstreamConnection | null;
  aborted: boolean;
  paused: boolean;
  reason: Error | null;
  /** The whole request body went to the socket. */
  bodyDone: boolean;
  private bodyWaiting: boolean;
  /** responseEnd() or fail() ran: nothing more is reported. */
  private ended: boolean;
  /** performance.now() by which the next step must happen; 0: none. */
  deadline: number;
  private timeoutCode: string;
  /** Index in `timed`; -1: not there. */
  slot: number;

  constructor(upstream: FastUpstream, options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler) {
    this.upstream = upstream;
    this.handler = handler;
    this.method = options.method;
    this.servername = (options as { servername?: string }).servername;
    this.body = (options.body as FastRequest | null | undefined) ?? null;
    this.chunked = this.body !== null && this.body.bodyLength < 0;
    this.head = requestHead(options, this.body, upstream.settings.origin.host);
    this.conn = null;
    this.aborted = false;
    this.paused = false;
    this.reason = null;
    this.bodyDone = this.body === null;
    this.bodyWaiting = false;
    this.ended = false;
    this.deadline = 0;
    this.timeoutCode = '';
    this.slot = -1;
  }

  /** Sends the head, and the body as it comes, on `conn`. */
  attachTo(conn: UpstreamConnection): void {
    this.conn = conn;
    const s = conn.socket;
    const timeout = this.upstream.settings.headersTimeout;
    if (timeout > 0) this.time(timeout, 'UND_ERR_HEADERS_TIMEOUT');
    // With a body, the head goes with its first bytes (as undici sends it): a body that
    // turns out malformed before any byte of it was read leaves the backend nothing.
    if (this.body === null) {
      corkTurn(s);
      s.write(this.head!, 'latin1');
      this.head = null;
      return;
    }
    s.cork();
    this.body.attach(this);
    s.uncork();
  }

  /** The head, with the first body bytes or the body's end. */
  private writeHead(s: Socket): void {
    const head = this.head;
    if (head === null) return;
    this.head = null;
    s.write(head, 'latin1');
  }

  write(chunk: Buffer): boolean {
    const conn = this.conn;
    if (conn === null || this.ended) return true;
    const s = conn.socket;
    // Each body write starts the headers timeout again, as undici's does: the response is
    // not late while the request is still being sent.
    if (this.deadline !== 0 && this.timeoutCode === 'UND_ERR_HEADERS_TIMEOUT') this.deadline = now() + this.upstream.settings.headersTimeout;
    let ok: boolean;
    s.cork();
    if (this.head !== null) this.writeHead(s);
    if (this.chunked) {
      s.write(`${chunk.length.toString(16)}${CRLF}`, 'latin1');
      s.write(chunk);
      ok = s.write(CRLF, 'latin1');
    } else {
      ok = s.write(chunk);
    }
    s.uncork();
    this.handler.onBodySent?.(chunk as never);
    if (!ok) this.bodyWaiting = true;
    return ok;
  }

  end(): void {
    if (this.conn === null || this.ended) return;
    const s = this.conn.socket;
    if (this.head !== null) {
      if (this.chunked) this.head += LAST_CHUNK;
      this.writeHead(s);
    } else if (this.chunked) {
      s.write(LAST_CHUNK, 'latin1');
    }
    this.bodyDone = true;
  }

  /** The upstream socket took what was waiting: the client's body may flow again. */
  drained(): void {
    if (!this.bodyWaiting) return;
    this.bodyWaiting = false;
    this.body?.owner.bodyFlowing();
  }

  responseStart(status: number, headers: Record<string, string | string[]>, message: string): void {
    const timeout = this.upstream.settings.bodyTimeout;
    if (timeout > 0) this.time(timeout, 'UND_ERR_BODY_TIMEOUT');
    else this.untime();
    this.handler.onResponseStart?.(this, status, headers, message);
  }

  responseData(chunk: Buffer): void {
    if (this.ended) return;
    if (this.deadline !== 0) this.deadline = now() + this.upstream.settings.bodyTimeout;
    this.handler.onResponseData?.(this, chunk);
  }

  responseEnd(): void {
    if (this.ended) return;
    this.ended = true;
    this.untime();
    const conn = this.conn!;
    this.conn = null;
    this.body?.detach(this);
    conn.finish(this.bodyDone && !this.aborted && this.method !== 'HEAD');
    this.upstream.done();
    this.handler.onResponseEnd?.(this, {});
  }

  /** The exchange failed (`err` carries undici's or llhttp's code): its connection goes too. */
  fail(err: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.untime();
    const conn = this.conn;
    this.conn = null;
    if (conn !== null) {
      if (conn.req === this) conn.req = null;
      conn.socket.destroy();
    }
    this.body?.detach(this);
    this.upstream.done();
    this.handler.onResponseError?.(this, err);
  }

  abort(reason: Error): void {
    if (this.aborted || this.ended) return;
    this.aborted = true;
    this.reason = reason;
    // As undici reports it: after the caller's own steps for the abort.
    queueMicrotask(() => this.fail(reason));
  }

  pause(): void {
    this.paused = true;
    if (this.conn !== null) pauseRead(this.conn.socket);
  }

  resume(): void {
    this.paused = false;
    if (this.conn !== null) resumeRead(this.conn.socket);
    if (this.deadline !== 0) this.deadline = now() + this.upstream.settings.bodyTimeout;
  }

  private time(ms: number, code: string): void {
    this.deadline = now() + ms;
    this.timeoutCode = code;
    if (this.slot === -1) {
      this.slot = timed.length;
      timed.push(this);
    }
    if (sweeper === null) {
      sweeper = setInterval(sweep, SWEEP_MS);
      sweeper.unref();
    }
  }

  private untime(): void {
    if (this.deadline === 0) return;
    this.deadline = 0;
    const i = this.slot;
    this.slot = -1;
    const last = timed.pop()!;
    if (last !== this) {
      timed[i] = last;
      last.slot = i;
    }
  }

  expire(now: number): void {
    // A response held back by a slow client is not the backend's delay.
    if (this.paused || now < this.deadline) return;
    const code = this.timeoutCode;
    this.fail(Object.assign(new Error(code === 'UND_ERR_HEADERS_TIMEOUT' ? 'Headers Timeout Error' : 'Body Timeout Error'), { code }));
  }
}

function sweep(): void {
  clock = performance.now();
  // Backwards: an exchange that expires swaps in the last one, which was checked already.
  for (let i = timed.length - 1; i >= 0; i--) timed[i]?.expire(clock);
  if (timed.length === 0 && sweeper !== null) {
    clearInterval(sweeper);
    sweeper = null;
  }
}

/**
 * The request head in undici's form, so a backend sees the same bytes from either engine:
 * Host and Connection first, then the headers in order, then the body's framing
 * (the Content-Length the client sent, or chunked when it sent chunks). A HEAD request asks the
 * backend to close: a server that sends a body anyway cannot put the connection out of step.
 */
function requestHead(options: Dispatcher.DispatchOptions, body: FastRequest | null, originHost: string): string {
  const headers = options.headers as string[];
  let host: string | null = null;
  let length: number | null = null;
  let rest = '';
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i];
    if (name.length === 4 && name.toLowerCase() === 'host') host = headers[i + 1];
    else if (name.length === 14 && name.toLowerCase() === 'content-length') length = Number(headers[i + 1]);
    else rest += `${name}: ${headers[i + 1]}${CRLF}`;
  }
  let head = `${options.method} ${options.path} HTTP/1.1${CRLF}host: ${host ?? originHost}${CRLF}`;
  head += options.method === 'HEAD' ? `connection: close${CRLF}` : `connection: keep-alive${CRLF}`;
  head += rest;
  if (length === 0 && !PAYLOAD_METHODS.has(options.method)) length = null;
  // A body's framing is the one it is written in (write() re-chunks only a chunked one),
  // never the headers': those may have lost a Content-Length the client listed in
  // Connection, and raw bytes under a chunked head are a request of the client's making.
  if (body !== null) head += body.bodyLength < 0 ? `transfer-encoding: chunked${CRLF}` : `content-length: ${body.bodyLength}${CRLF}`;
  else if (length === 0) head += `content-length: 0${CRLF}`;
  return head + CRLF;
}
