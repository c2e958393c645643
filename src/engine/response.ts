import { EventEmitter } from 'node:events';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { corkTurn } from './write-batch.ts';
import type { FastRequest } from './request.ts';

// A response of the fast engine: the part of node's ServerResponse the request path uses
// (writeHead, write, end, destroy, 'drain', 'finish', 'close'), written straight to the
// client socket. The head is held until the first body bytes or the end, so that head and
// body leave in one write. Framing follows node:http's rules: the Content-Length given,
// else chunked to an HTTP/1.1 client, else (HTTP/1.0) the body ends with the connection.

/** What a response reports to its connection. */
export interface ResponseOwner {
  /** The response ended (all of it handed to the socket): the connection may go on. */
  responded(res: FastResponse): void;
  /** Seconds a kept-alive connection stays open, for the Keep-Alive header. */
  readonly keepAliveSeconds: number;
}

const CRLF = '\r\n';
const LAST_CHUNK = '0\r\n\r\n';
/** A header value node:http would refuse to send (control characters but tab). */
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A first body chunk up to this size leaves in one buffer with the head; a larger one is not worth the copy. */
const JOINED_BODY_BYTES = 4096;

let date = '';
function httpDate(): string {
  if (date === '') {
    date = new Date().toUTCString();
    setTimeout(clearDate, 1000 - new Date().getMilliseconds()).unref();
  }
  return date;
}
function clearDate(): void {
  date = '';
}

type HeaderValue = string | number | readonly string[];
type Listener = (...args: any[]) => void;

export class FastResponse extends EventEmitter {
  readonly req: FastRequest;
  readonly socket: Socket;
  readonly owner: ResponseOwner;
  statusCode: number;
  /** False: the connection closes after this response (node's name). */
  shouldKeepAlive: boolean;
  headersSent: boolean;
  writableEnded: boolean;
  writableFinished: boolean;
  destroyed: boolean;
  /** The head, written with the first body bytes or at the end. */
  private head: string | null;
  private chunked: boolean;
  private bodyless: boolean;
  /**
   * 'close' listeners, kept apart from EventEmitter's: every response gets two (the
   * pipeline's and the exchange's), 'close' comes once, and once() would wrap each.
   */
  private closing: Listener[] | null;

  constructor(owner: ResponseOwner, req: FastRequest, keepAlive: boolean) {
    super();
    this.owner = owner;
    this.req = req;
    this.socket = req.socket;
    this.statusCode = 200;
    this.shouldKeepAlive = keepAlive;
    this.headersSent = false;
    this.writableEnded = false;
    this.writableFinished = false;
    this.destroyed = false;
    this.head = null;
    this.chunked = false;
    this.bodyless = false;
    this.closing = null;
  }

  override on(event: string | symbol, listener: Listener): this {
    if (event !== 'close') return super.on(event, listener);
    (this.closing ??= []).push(listener);
    return this;
  }

  override addListener(event: string | symbol, listener: Listener): this {
    return this.on(event, listener);
  }

  override once(event: string | symbol, listener: Listener): this {
    return event === 'close' ? this.on(event, listener) : super.once(event, listener);
  }

  override removeListener(event: string | symbol, listener: Listener): this {
    if (event !== 'close') return super.removeListener(event, listener);
    const i = this.closing === null ? -1 : this.closing.indexOf(listener);
    if (i !== -1) this.closing!.splice(i, 1);
    return this;
  }

  override off(event: string | symbol, listener: Listener): this {
    return this.removeListener(event, listener);
  }

  /** 'close', to each listener once. */
  closed(): void {
    const list = this.closing;
    this.closing = null;
    if (list !== null) for (let i = 0; i < list.length; i++) list[i].call(this);
  }

  get writableNeedDrain(): boolean {
    return this.socket.writableNeedDrain;
  }

  /** As ServerResponse's: `headers` a flat [name, value, …] array or an object. Throws on a header node:http refuses. */
  writeHead(status: number, message?: string | HeaderValue[] | Record<string, HeaderValue>, headers?: readonly HeaderValue[] | Record<string, HeaderValue>): this {
    if (this.headersSent) throw new Error('headers already sent');
    if (typeof message !== 'string') {
      headers = message;
      message = undefined;
    }
    const flat = Array.isArray(headers) ? headers as readonly HeaderValue[] : headers === undefined ? [] : flatten(headers as Record<string, HeaderValue>);
    let head = '';
    let names = '';
    let values = '';
    let length = false;
    let close = false;
    let dated = false;
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i] as string;
      const value = flat[i + 1];
      const v = typeof value === 'string' ? value : Array.isArray(value) ? value.join(', ') : String(value);
      names += name;
      values += v;
      if (name.length === 14 && name.toLowerCase() === 'content-length') length = true;
      else if (name.length === 10 && name.toLowerCase() === 'connection') {
        // Whether the connection stays open is this side's decision; the header is written below.
        if (v.toLowerCase().includes('close')) close = true;
        continue;
      } else if (name.length === 4 && name.toLowerCase() === 'date') dated = true;
      head += `${name}: ${v}${CRLF}`;
    }
    // Two tests for the whole head rather than two per header: names are tokens, values
    // carry no control character but tab (node:http refuses the same).
    if ((names !== '' && !TOKEN.test(names)) || INVALID_VALUE.test(values)) throw new TypeError('invalid response header');
    const req = this.req;
    this.statusCode = status;
    this.bodyless = req.method === 'HEAD' || status === 204 || status === 304 || status < 200;
    if (!dated) head += `date: ${httpDate()}${CRLF}`;
    if (!this.bodyless && !length && status !== 204 && status !== 304) {
      if (req.httpVersionMinor >= 1 && req.httpVersionMajor === 1) {
        this.chunked = true;
        head += `transfer-encoding: chunked${CRLF}`;
      } else {
        // An HTTP/1.0 client reads the body to the connection's end.
        this.shouldKeepAlive = false;
      }
    }
    // A request body not read to its end leaves the connection out of step.
    if (close || !req.complete) this.shouldKeepAlive = false;
    if (!this.shouldKeepAlive) {
      head += `connection: close${CRLF}`;
    } else {
      head += `connection: keep-alive${CRLF}keep-alive: timeout=${this.owner.keepAliveSeconds}${CRLF}`;
    }
    this.head = `HTTP/1.1 ${status} ${message ?? STATUS_CODES[status] ?? 'unknown'}${CRLF}${head}${CRLF}`;
    this.headersSent = true;
    return this;
  }

  /** A body chunk; false when the socket's buffer is full ('drain' follows). */
  write(chunk: Buffer | string): boolean {
    if (this.writableEnded || this.destroyed) return false;
    if (!this.headersSent) this.writeHead(this.statusCode);
    const s = this.socket;
    const head = this.head;
    if (this.bodyless || chunk.length === 0) {
      if (head !== null) {
        this.head = null;
        corkTurn(s);
        return s.write(head, 'latin1');
      }
      return true;
    }
    if (head !== null && !this.chunked && typeof chunk !== 'string' && chunk.length <= JOINED_BODY_BYTES) {
      // Head and body copied into one buffer: one plain write, not a corked writev.
      this.head = null;
      corkTurn(s);
      return s.write(joined(head, chunk));
    }
    s.cork();
    if (head !== null) {
      this.head = null;
      s.write(head, 'latin1');
    }
    let ok: boolean;
    if (this.chunked) {
      s.write(`${Buffer.byteLength(chunk).toString(16)}${CRLF}`, 'latin1');
      s.write(chunk);
      ok = s.write(CRLF, 'latin1');
    } else {
      ok = s.write(chunk);
    }
    s.uncork();
    return ok;
  }

  end(chunk?: Buffer | string): this {
    if (this.writableEnded || this.destroyed) return this;
    if (chunk !== undefined && chunk.length > 0) this.write(chunk);
    else if (!this.headersSent) this.writeHead(this.statusCode);
    this.writableEnded = true;
    const head = this.head;
    this.head = null;
    if (head !== null) corkTurn(this.socket);
    if (this.chunked && !this.bodyless) this.socket.write(head === null ? LAST_CHUNK : head + LAST_CHUNK, 'latin1');
    else if (head !== null) this.socket.write(head, 'latin1');
    // After the caller's own steps for this end (forward.ts reports the exchange first).
    process.nextTick(finished, this);
    return this;
  }

  /** Cuts the response and its connection: the client sees a broken, not a complete, body. */
  destroy(_err?: Error): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.socket.destroy();
    return this;
  }

  /** The connection closed under the response: 'close' with writableFinished false. */
  aborted(): void {
    if (this.writableFinished) return;
    this.destroyed = true;
    this.closed();
  }
}

/** An object's headers as a flat [name, value, …] array, an array value as one line per element (as node:http sends them). */
function flatten(headers: Record<string, HeaderValue>): HeaderValue[] {
  const flat: HeaderValue[] = [];
  for (const name in headers) {
    const value = headers[name];
    if (Array.isArray(value)) for (const v of value) flat.push(name, v);
    else flat.push(name, value);
  }
  return flat;
}

/** `head` (latin1: one byte a character) followed by `body`, in one buffer. */
function joined(head: string, body: Buffer): Buffer {
  const n = head.length;
  const buf = Buffer.allocUnsafe(n + body.length);
  buf.write(head, 0, n, 'latin1');
  body.copy(buf, n);
  return buf;
}

function finished(res: FastResponse): void {
  if (res.destroyed) return;
  res.writableFinished = true;
  res.emit('finish');
  res.closed();
  res.owner.responded(res);
}
