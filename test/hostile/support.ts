// Raw-socket tools for the hostile-client tests: a recording backend that keeps every
// byte that reached it, and a client that writes exact bytes and reads what comes back.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';

/**
 * A node:http backend that records the raw bytes of every connection made to it and
 * answers each request with `200` and the body `METHOD URL`. Tests assert on `bytes()`:
 * exactly what tandem sent upstream.
 */
export class RecordingBackend {
  readonly server: Server;
  readonly port: number;
  readonly url: string;
  /** Raw bytes received over every upstream connection, in arrival order. */
  readonly chunks: Buffer[];
  /** Upstream connections accepted. */
  accepted: number;
  /** Requests as node parsed them. */
  readonly requests: { method: string; url: string; headers: IncomingMessage['headers']; body: string }[];
  /** Replaces the default answer; called after the body has been read unless it is `early`. */
  handler: ((req: IncomingMessage, res: ServerResponse, body: string) => void) | null;
  private readonly sockets: Set<Socket>;

  private constructor(server: Server, port: number) {
    this.server = server;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.chunks = [];
    this.accepted = 0;
    this.requests = [];
    this.handler = null;
    this.sockets = new Set();
    server.on('connection', (s: Socket) => {
      this.accepted++;
      this.sockets.add(s);
      s.on('data', (d: Buffer) => this.chunks.push(d));
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => {
      let body = '';
      req.setEncoding('latin1');
      req.on('data', (d: string) => { body += d; });
      req.on('end', () => {
        this.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
        if (this.handler !== null) return this.handler(req, res, body);
        const text = `${req.method} ${req.url}`;
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      });
    });
  }

  static async start(): Promise<RecordingBackend> {
    const server = createServer({ keepAliveTimeout: 30_000 });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    return new RecordingBackend(server, (server.address() as AddressInfo).port);
  }

  /** Everything received so far, all connections, as latin1 text. */
  bytes(): string {
    return Buffer.concat(this.chunks).toString('latin1');
  }

  /** Forgets what was recorded (between cases sharing one backend). */
  reset(): void {
    this.chunks.length = 0;
    this.requests.length = 0;
    this.handler = null;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

export interface Exchange {
  /** Everything the proxy sent back, latin1. */
  readonly text: string;
  /** The proxy closed (or reset) the connection within the wait. */
  readonly closed: boolean;
  /** Status codes of the responses in `text`, in order. */
  readonly statuses: number[];
}

/**
 * Writes `bytes` (one string, or several written apart by `gapMs`) to host:port and
 * collects the answer until the proxy closes or `waitMs` passes, or — with `until` —
 * until the text received satisfies it.
 */
export async function exchange(address: string, bytes: string | Buffer | (string | Buffer)[],
  opts: { waitMs?: number; gapMs?: number; until?: (text: string) => boolean } = {}): Promise<Exchange> {
  const [host, port] = splitAddress(address);
  const socket = connect(port, host);
  await once(socket, 'connect');
  let text = '';
  let done: () => void = () => {};
  const finished = new Promise<void>((r) => { done = r; });
  let closed = false;
  socket.on('data', (d: Buffer) => {
    text += d.toString('latin1');
    if (opts.until?.(text)) done();
  });
  socket.on('error', () => {});
  socket.on('close', () => { closed = true; done(); });
  const parts = Array.isArray(bytes) ? bytes : [bytes];
  for (let i = 0; i < parts.length; i++) {
    if (i > 0 && opts.gapMs !== undefined) await new Promise((r) => setTimeout(r, opts.gapMs));
    if (!socket.destroyed) socket.write(parts[i]);
  }
  const timer = setTimeout(done, opts.waitMs ?? 3000);
  await finished;
  clearTimeout(timer);
  socket.destroy();
  return { text, closed, statuses: statuses(text) };
}

/** Status codes of the status lines in `text` (bodies here never contain one). */
export function statuses(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.[01] (\d{3}) [A-Z]/g)].map((m) => Number(m[1]));
}

export function splitAddress(address: string): [string, number] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i).replace(/^\[|\]$/g, ''), Number(address.slice(i + 1))];
}
