import type { IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';

// A request as the fast engine parsed it: the fields of node's IncomingMessage that the
// request path reads (request-checks, the router, headers.ts, the access log), in the
// same form node gives them, and its body, which goes to one sink (the upstream
// connection) as llhttp hands it over, without a stream in between.

/** Where a request body goes: an upstream connection. write() false: stop reading until drained(). */
export interface BodySink {
  write(chunk: Buffer): boolean;
  end(): void;
}

/** Body bytes held while no sink is attached (queued for a backend); above this the client is not read. */
export const HELD_BODY_BYTES = 64 * 1024;

/**
 * Request fields node:http keeps once (the first) when repeated; request-checks.ts refuses
 * repeats of those that matter before anything reads them.
 */
const FIRST_WINS = new Set([
  'age', 'authorization', 'content-length', 'content-type', 'etag', 'expires', 'from', 'host',
  'if-modified-since', 'if-unmodified-since', 'last-modified', 'location', 'max-forwards',
  'proxy-authorization', 'referer', 'retry-after', 'server', 'user-agent',
]);

export interface BodyOwner {
  /** The sink took a chunk but asked for no more until drained. */
  bodyStalled(): void;
  /** The sink drained, or a sink was attached: reading may go on. */
  bodyFlowing(): void;
}

export class FastRequest {
  readonly method: string;
  url: string;
  readonly rawHeaders: string[];
  readonly headers: IncomingHttpHeaders;
  readonly httpVersionMajor: number;
  readonly httpVersionMinor: number;
  readonly httpVersion: string;
  readonly socket: Socket;
  /** The body (if any) was read to its end. */
  complete: boolean;
  /** Content-Length of the body; -1: chunked (re-encoded upstream); 0: none. */
  readonly bodyLength: number;
  /** Body bytes read before a sink was attached; null when none are held. */
  held: Buffer[] | null;
  heldBytes: number;
  sink: BodySink | null;
  readonly owner: BodyOwner;

  constructor(owner: BodyOwner, socket: Socket, method: string, url: string, raw: string[], major: number, minor: number) {
    this.owner = owner;
    this.socket = socket;
    this.method = method;
    this.url = url;
    this.rawHeaders = raw;
    this.httpVersionMajor = major;
    this.httpVersionMinor = minor;
    this.httpVersion = minor === 1 && major === 1 ? '1.1' : `${major}.${minor}`;
    this.headers = headerObject(raw);
    const te = this.headers['transfer-encoding'];
    const cl = this.headers['content-length'];
    // llhttp refused a request with both, or with a Transfer-Encoding not ending in chunked.
    this.bodyLength = te !== undefined ? -1 : cl === undefined ? 0 : Number(cl);
    this.complete = this.bodyLength === 0;
    this.held = null;
    this.heldBytes = 0;
    this.sink = null;
  }

  /** A body chunk from llhttp. False: hold reading (the sink is full, or too much is held). */
  push(chunk: Buffer): boolean {
    if (this.sink !== null) return this.sink.write(chunk);
    (this.held ??= []).push(chunk);
    this.heldBytes += chunk.length;
    return this.heldBytes < HELD_BODY_BYTES;
  }

  /** The body ended (llhttp's message complete). */
  finish(): void {
    this.complete = true;
    this.sink?.end();
  }

  /** Sends the body to `sink`: what is held now, the rest as it is read. */
  attach(sink: BodySink): void {
    this.sink = sink;
    let flowing = true;
    const held = this.held;
    if (held !== null) {
      this.held = null;
      this.heldBytes = 0;
      for (let i = 0; i < held.length; i++) flowing = sink.write(held[i]);
    }
    if (this.complete) sink.end();
    else if (flowing) this.owner.bodyFlowing();
    else this.owner.bodyStalled();
  }

  /** The sink is gone (the upstream exchange failed or ended early): what comes is dropped. */
  detach(sink: BodySink): void {
    if (this.sink === sink) this.sink = DROP;
  }
}

const DROP: BodySink = { write: () => true, end: () => {} };

/** The header object node:http builds from the raw pairs: lower-case names, repeats joined. */
function headerObject(raw: readonly string[]): IncomingHttpHeaders {
  const h: Record<string, string | string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    const value = raw[i + 1];
    const had = h[name];
    if (had === undefined) h[name] = name === 'set-cookie' ? [value] : value;
    else if (name === 'set-cookie') (had as string[]).push(value);
    else if (!FIRST_WINS.has(name)) h[name] = `${had as string}${name === 'cookie' ? '; ' : ', '}${value}`;
  }
  return h as IncomingHttpHeaders;
}

/** The request head as it came (names and values as parsed), for node:http to read again after a handover. */
export function serializeHead(method: string, url: string, major: number, minor: number, raw: readonly string[]): string {
  let head = `${method} ${url} HTTP/${major}.${minor}\r\n`;
  for (let i = 0; i < raw.length; i += 2) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return `${head}\r\n`;
}
