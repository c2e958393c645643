import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import { errors, type ErrorSpec } from '../errors.ts';
import type { Backend } from '../pool/backend.ts';
import { requestDone, type PoolRuntime, type RouteRuntime } from './generation.ts';
import type { Exchange, RequestObserver } from './exchange.ts';
import { bodyBytesMoved } from './gc-pacer.ts';
import { responseHeaders, upstreamHeaders, type ForwardContext } from './headers.ts';
import { answerError, errorBody } from './own-answers.ts';
import { writeResumed, writeStalled } from './send-timeout.ts';
import type { Waiter } from './backend-queue.ts';
import { privateUpstream } from './private-upstreams.ts';
import { relayEncoded, writeEncoded, type Encoder } from './compress.ts';

// The hot path. One ProxyRequest per proxied request is the only allocation that is not
// node's or undici's own: it is undici's dispatch handler, and the response stream's
// 'close' and 'drain' listeners are module-level functions that find it through a
// symbol, so no closure is created per request.

const kProxy = Symbol('tandem.proxy');

type ResponseWithProxy = ServerResponse & { [kProxy]?: ProxyRequest };
type FailureKind = 'connect' | 'reset' | 'timeout' | 'invalid';

const RETRYABLE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** A backend with fewer requests in flight than its maxConnections. */
function hasRoom(b: Backend): boolean {
  return b.active < b.config.maxConnections;
}

export class ProxyRequest implements Dispatcher.DispatchHandler, Exchange, Waiter {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly route: RouteRuntime;
  readonly pool: PoolRuntime;
  readonly ctx: ForwardContext;
  readonly observer: RequestObserver;
  readonly start: number;
  readonly requestId: string;
  readonly traceId: string | null;
  readonly upgrade: boolean;
  backend: Backend | null;
  controller: Dispatcher.DispatchController | null;
  headers: string[] | null;
  status: number;
  bytes: number;
  /** performance.now() when the current attempt was dispatched. */
  dispatched: number;
  upstreamSeconds: number;
  received: number;
  retries: number;
  /** First byte of the response reached the client: nothing can be retried or answered any more. */
  responded: boolean;
  done: boolean;
  hasBody: boolean;
  /** A Set-Cookie to add for a sticky pick; null when none. */
  stickyCookie: string | null;
  errorCode: string | null;
  shutdown: boolean;
  /** finish() has run; later callbacks (undici's error after our own abort) do nothing. */
  reported: boolean;
  drainHooked: boolean;
  /** Compresses the response body on its way to the client; null: relayed as it is. */
  encoder: Encoder | null;

  constructor(req: IncomingMessage, res: ServerResponse, route: RouteRuntime, pool: PoolRuntime,
    ctx: ForwardContext, observer: RequestObserver, start: number, shutdown: boolean, requestId: string, traceId: string | null) {
    this.req = req;
    this.res = res;
    this.route = route;
    this.pool = pool;
    this.ctx = ctx;
    this.observer = observer;
    this.start = start;
    this.requestId = requestId;
    this.traceId = traceId;
    this.upgrade = false;
    this.backend = null;
    this.controller = null;
    this.headers = null;
    this.status = 0;
    this.bytes = 0;
    this.dispatched = 0;
    this.upstreamSeconds = -1;
    this.received = 0;
    this.retries = 0;
    this.responded = false;
    this.done = false;
    const te = req.headers['transfer-encoding'];
    const cl = req.headers['content-length'];
    this.hasBody = te !== undefined || (cl !== undefined && cl !== '0');
    this.stickyCookie = null;
    this.errorCode = null;
    this.shutdown = shutdown;
    this.reported = false;
    this.drainHooked = false;
    this.encoder = null;
  }

  /** Picks a backend and sends the request to it; answers 503 itself when there is none. */
  run(): void {
    this.ctx.plane.active++;
    this.pool.retryBudget.request(this.start);
    (this.res as ResponseWithProxy)[kProxy] = this;
    this.res.on('close', onResponseClose);
    this.admit();
  }

  /** Picks a backend with room and dispatches, or waits in the pool's queue for one. */
  admit(): void {
    const pool = this.pool;
    let backend: Backend | null = null;
    let sticky = false;
    if (pool.sticky !== null) backend = pool.sticky.lookup(this.req.headers.cookie);
    if (backend !== null) sticky = true;
    else backend = pool.pool.pick();
    if (backend === null) {
      this.fail(errors.NO_BACKEND);
      return;
    }
    if (!hasRoom(backend)) {
      // A sticky client waits for its own backend; others go to any with room.
      const other = sticky ? null : this.pickOther(backend, hasRoom);
      if (other === null) {
        if (!pool.queue.wait(this, pool.config.queueSize, pool.config.queueTimeout)) this.fail(errors.QUEUE_FULL);
        return;
      }
      backend = other;
    }
    pool.queue.forget(this);
    // Cookies set over TLS get Secure, so they never travel in clear.
    if (pool.sticky !== null && !sticky) this.stickyCookie = pool.sticky.setCookie(backend, this.ctx.proto === 'https');
    // With per-backend Host, a placeholder keeps the Host slot last for dispatch() to fill.
    this.headers = upstreamHeaders(this.req, this.ctx, pool.hostFromBackend ? '' : pool.hostOverride, this.requestId, this.traceId !== null);
    const edit = this.route.actions?.request ?? null;
    if (edit !== null) edit.apply(this.headers, true);
    this.dispatch(backend);
  }

  /** Waited in the queue for the whole queue timeout. */
  expire(): void {
    this.fail(errors.QUEUE_TIMEOUT);
  }

  private dispatch(backend: Backend): void {
    this.backend = backend;
    if (this.pool.hostFromBackend) this.headers![this.headers!.length - 1] = backend.hostHeader;
    backend.active++;
    this.pool.activeRequests++;
    this.dispatched = performance.now();
    const req = this.req;
    const upstream = backend.proxyVersion !== null ? privateUpstream(this.ctx, backend)
      : this.ctx.fast === true ? backend.fastUpstream() : backend.upstream;
    upstream.dispatch({
      path: this.route.actions === null ? req.url ?? '/' : this.route.actions.path(req.url ?? '/'),
      method: req.method ?? 'GET',
      headers: this.headers,
      body: this.hasBody ? req : null,
      // Retries are tandem's decision (it knows the pool), never undici's.
      idempotent: false,
      // One name per backend: undici would take it from each client's Host and reconnect
      // whenever it changes (src/pool/tls.ts sets the TLS name itself).
      servername: backend.config.host,
    } as Dispatcher.DispatchOptions, this);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.done) controller.abort(new Error('client went away'));
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number,
    headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    if (statusCode < 200) return; // 1xx: node answers 100-continue to the client itself.
    const backend = this.backend!;
    this.upstreamSeconds = (performance.now() - this.dispatched) / 1000;
    this.status = statusCode;
    this.responded = true;
    const out = responseHeaders(headers);
    out.push('x-request-id', this.requestId);
    if (this.stickyCookie !== null) out.push('set-cookie', this.stickyCookie);
    const edit = this.route.actions?.response ?? null;
    if (edit !== null) edit.apply(out, false);
    if (this.pool.config.debugHeaders) out.push('x-tandem-backend', backend.name);
    if (this.route.compress !== null) this.encoder = this.route.compress.start(this.req, statusCode, headers, out);
    // An early answer (a 401 before the upload was read): undici stops reading the body
    // and node:http would neither parse the next request nor close, so the answer says
    // Connection: close and the client sends its next request on a new connection.
    if (this.shutdown || (this.hasBody && !this.req.complete)) out.push('connection', 'close');
    const res = this.res;
    if (statusCode >= 500 && this.pool.outlier !== null) this.pool.outlier.onFailure(backend, '5xx');
    try {
      res.writeHead(statusCode, statusMessage || undefined, out);
      if (this.encoder !== null) relayEncoded(this);
    } catch {
      this.encoder?.destroy();
      this.encoder = null;
      // A header value the client side cannot carry: an invalid response, answered as
      // such (not retried: the backend did answer), and the upstream request dropped.
      this.responded = false;
      this.fail(errors.BACKEND_INVALID_RESPONSE);
      controller.abort(new Error('invalid response header'));
    }
  }

  onBodySent(chunk: Buffer | string): void {
    this.received += chunk.length;
    bodyBytesMoved(chunk.length);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    bodyBytesMoved(chunk.length);
    if (this.encoder !== null) {
      writeEncoded(this, controller, chunk, this.ctx.owner.config.sendTimeout);
      return;
    }
    this.bytes += chunk.length;
    if (!this.res.write(chunk)) {
      controller.pause();
      writeStalled(this.res, this.ctx.owner.config.sendTimeout);
      // One listener for the life of the response, added the first time it is needed.
      if (!this.drainHooked) {
        this.drainHooked = true;
        this.res.on('drain', onResponseDrain);
      }
    }
  }

  onResponseEnd(): void {
    const backend = this.backend!;
    if (this.pool.outlier !== null && this.status < 500) this.pool.outlier.onSuccess(backend);
    // An encoder ends the response itself, and the exchange once its last bytes are out.
    if (this.encoder !== null) this.encoder.end();
    else {
      this.res.end();
      this.finish();
    }
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.done) {
      // The client went away and we aborted: nothing to answer.
      this.finish();
      return;
    }
    const backend = this.backend!;
    const kind = classify(err);
    backend.failures++;
    if (this.pool.outlier !== null) this.pool.outlier.onFailure(backend, kind === 'invalid' ? 'reset' : kind);
    if (this.responded) {
      // Part of the body already went out; ending it now would pass a truncated body
      // off as complete. Destroying the connection tells the client it was cut.
      this.errorCode = errors.BACKEND_RESET.code;
      this.res.destroy(err);
      this.finish();
      return;
    }
    if (this.mayRetry(kind)) {
      const next = this.pickOther(backend);
      // Nothing reached the backend when the connection could not be made: sending it
      // elsewhere adds no load anywhere (HAProxy's redispatch), so it costs no budget.
      if (next !== null && (kind === 'connect' || this.pool.retryBudget.tryRetry(performance.now()))) {
        this.release();
        this.retries++;
        this.controller = null;
        // The cookie must name the backend that answers, not the one that failed.
        if (this.stickyCookie !== null) this.stickyCookie = this.pool.sticky!.setCookie(next, this.ctx.proto === 'https');
        this.dispatch(next);
        return;
      }
    }
    this.fail(kind === 'connect' ? ((err as { code?: string }).code === 'UND_ERR_CONNECT_TIMEOUT' ? errors.CONNECT_TIMEOUT : errors.BACKEND_UNREACHABLE)
      : kind === 'timeout' ? errors.RESPONSE_TIMEOUT
        : kind === 'invalid' ? errors.BACKEND_INVALID_RESPONSE : errors.BACKEND_RESET);
  }

  /** A failed attempt may go to another backend only when repeating it cannot do harm. */
  private mayRetry(kind: FailureKind): boolean {
    const pool = this.pool;
    if (this.retries >= pool.config.retries) return false;
    // A connection that could not be made carried nothing: any method is safe to send on.
    if (kind === 'connect') return true;
    return !this.hasBody && RETRYABLE_METHODS.has(this.req.method ?? '');
  }

  /** Another backend than `not` (that passes `fits`), or null after one round of picks. */
  private pickOther(not: Backend, fits?: (b: Backend) => boolean): Backend | null {
    const pool = this.pool.pool;
    for (let i = 0; i < pool.backends.length; i++) {
      const b = pool.pick();
      if (b === null) return null;
      if (b !== not && (fits === undefined || fits(b))) return b;
    }
    return null;
  }

  /** Answers the client with one of tandem's own errors (before any response byte went out). */
  fail(spec: ErrorSpec): void {
    this.errorCode = spec.code;
    this.status = spec.status;
    const res = this.res;
    if (!res.headersSent && !res.destroyed) {
      // A request body we will never read must not keep the connection busy.
      const close = this.shutdown || (this.hasBody && !this.req.complete) || spec.status < 500;
      this.bytes = answerError(this.req, res, spec, this.pool.name, close, this.requestId, spec.status === 503 ? 1 : 0);
    }
    this.finish();
  }

  private release(): void {
    const backend = this.backend;
    if (backend !== null) {
      backend.active--;
      this.pool.activeRequests--;
      // The slot this request held goes to the oldest request waiting for one.
      if (this.pool.queue.length > 0) this.pool.queue.wake();
    }
  }

  /** Called once when the exchange is over, whatever way it ended. */
  finish(): void {
    if (this.reported) return;
    this.reported = true;
    this.done = true;
    this.ctx.plane.active--;
    if (this.encoder !== null && !this.encoder.readableEnded) this.encoder.destroy();
    this.release();
    requestDone(this.pool);
    if (this.backend !== null) this.backend.requests++;
    // 499: the client closed the connection before any status was decided (nginx's code).
    if (this.status === 0) this.status = 499;
    this.observer.finished(this);
  }
}

/**
 * The client's request turned out malformed after its head was dispatched (a bad chunk
 * size, say): the upstream exchange is dropped before or while the body is sent, and
 * the client gets `spec` with the connection closed.
 */
export function rejectInFlight(res: ServerResponse, spec: ErrorSpec): void {
  res.shouldKeepAlive = false;
  const p = (res as ResponseWithProxy)[kProxy];
  if (p === undefined || p.reported) {
    const body = errorBody(spec, '');
    res.writeHead(spec.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), connection: 'close' });
    res.end(body);
    return;
  }
  p.done = true;
  if (p.controller !== null && !p.controller.aborted) p.controller.abort(new Error('malformed request'));
  p.fail(spec);
}

function onResponseClose(this: ResponseWithProxy): void {
  writeResumed(this);
  const p = this[kProxy];
  if (p === undefined || p.reported) return;
  if (!this.writableFinished) {
    // The client went away before the response was complete: stop the upstream at once
    // so its socket is not left reading a body nobody wants.
    p.done = true;
    if (p.backend === null) {
      // It was waiting for a backend with room: nothing upstream to stop.
      p.pool.queue.forget(p);
      p.finish();
      return;
    }
    if (p.controller !== null && !p.controller.aborted) p.controller.abort(new Error('client closed the connection'));
    // The backend may be done already while the encoder still had bytes for the client.
    if (p.encoder !== null) p.finish();
  }
}

function onResponseDrain(this: ResponseWithProxy): void {
  writeResumed(this);
  const p = this[kProxy];
  if (p !== undefined && p.controller !== null && !p.controller.aborted) p.controller.resume();
}

function classify(err: Error & { code?: string }): FailureKind {
  switch (err.code) {
    case 'ECONNREFUSED': case 'EHOSTUNREACH': case 'ENETUNREACH': case 'ENOTFOUND': case 'EAI_AGAIN':
    case 'UND_ERR_CONNECT_TIMEOUT': case 'EADDRNOTAVAIL':
      return 'connect';
    case 'UND_ERR_HEADERS_TIMEOUT': case 'UND_ERR_BODY_TIMEOUT':
      return 'timeout';
    case 'HPE_INVALID_CONSTANT': case 'HPE_INVALID_STATUS': case 'HPE_INVALID_HEADER_TOKEN':
    case 'HPE_INVALID_VERSION': case 'HPE_UNEXPECTED_CONTENT_LENGTH': case 'UND_ERR_RESPONSE_STATUS_CODE':
    case 'HPE_INVALID_CHUNK_SIZE': case 'HPE_INVALID_CONTENT_LENGTH': case 'HPE_HEADER_OVERFLOW':
    case 'UND_ERR_HEADERS_OVERFLOW': case 'UND_ERR_INVALID_ARG': case 'UND_ERR_INFO':
      return err.code === 'UND_ERR_INFO' ? 'reset' : 'invalid';
    default:
      return err.name === 'HTTPParserError' ? 'invalid' : 'reset';
  }
}
