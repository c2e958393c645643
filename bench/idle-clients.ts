// The client side of bench/idle-connections.ts: keep-alive connections that each sent
// one request, read its whole answer and then stay open and idle. Plain node:net and one
// fixed HTTP/1.1 request, so the client adds nothing the proxy has to hold beyond the
// connection itself, and connections open in bounded batches (each batch connects,
// asks and is answered before the next starts), so the proxy never sees a burst larger
// than a batch. Every batch has a deadline.

import { connect, type Socket } from 'node:net';

const REQUEST = Buffer.from('GET / HTTP/1.1\r\nHost: idle.bench\r\n\r\n', 'latin1');

/** Connections held open after their one request, and what happened to them since. */
export class IdleClients {
  readonly sockets: Socket[] = [];
  /** Connections the server closed (or that failed) after their answer. */
  closed = 0;
  /** Bytes that arrived on a connection after its answer (there should be none). */
  unexpectedBytes = 0;

  private readonly port: number;
  private readonly host: string;

  constructor(port: number, host = '127.0.0.1') {
    this.port = port;
    this.host = host;
  }

  /**
   * Opens `count` connections, `batch` at a time; each batch must be answered within
   * `batchTimeoutMs`, and the next starts `pauseMs` after. Rejects on the first connection
   * that fails or is not answered 200.
   */
  async open(count: number, batch: number, batchTimeoutMs: number, pauseMs = 0): Promise<void> {
    for (let done = 0; done < count; done += batch) {
      if (done > 0 && pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      const n = Math.min(batch, count - done);
      const deadline = Date.now() + batchTimeoutMs;
      const opened = await Promise.allSettled(Array.from({ length: n }, () => this.openOne(deadline, batchTimeoutMs)));
      for (const r of opened) if (r.status === 'fulfilled') this.keep(r.value);
      const failed = opened.filter((r) => r.status === 'rejected');
      if (failed.length > 0) {
        throw new Error(`${failed.length} of a batch of ${n} connections failed after ${this.sockets.length} were open: ${(failed[0] as PromiseRejectedResult).reason.message}`);
      }
    }
  }

  /** Closes every connection and resolves when all are closed. */
  async close(): Promise<void> {
    await Promise.all(this.sockets.map((s) => (s.closed ? undefined : new Promise<void>((resolve) => {
      s.once('close', () => resolve());
      s.destroy();
    }))));
    this.sockets.length = 0;
  }

  private keep(s: Socket): void {
    this.sockets.push(s);
    s.on('data', (chunk: Buffer) => { this.unexpectedBytes += chunk.length; });
    s.once('close', () => { this.closed++; });
  }

  /** One connection, one request, its whole answer; resolves with the socket still open. */
  private openOne(deadline: number, batchTimeoutMs: number): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const s = connect({ host: this.host, port: this.port, noDelay: true });
      let head = '';
      let bodyLeft = -1;
      let chunked = false;
      const finish = (err: Error | null) => {
        clearTimeout(timer);
        s.removeListener('data', onData);
        s.removeListener('error', onError);
        s.removeListener('close', onClose);
        if (err === null) {
          s.on('error', () => {});
          resolve(s);
        } else {
          s.destroy();
          reject(err);
        }
      };
      const onError = (err: Error) => finish(err);
      const onClose = () => finish(new Error('the server closed the connection before its answer was complete'));
      const onData = (chunk: Buffer) => {
        head += chunk.toString('latin1');
        if (bodyLeft < 0) {
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) return;
          const status = head.slice(0, head.indexOf('\r\n'));
          if (!/^HTTP\/1\.1 200 /.test(status)) return finish(new Error(`answered '${status}', expected HTTP/1.1 200`));
          if (/\r\nconnection:\s*close/i.test(head.slice(0, end))) return finish(new Error('answered with Connection: close'));
          chunked = /\r\ntransfer-encoding:\s*chunked/i.test(head.slice(0, end));
          const length = head.slice(0, end).match(/\r\ncontent-length:\s*(\d+)/i);
          bodyLeft = chunked ? 0 : Number(length?.[1] ?? 0);
          head = head.slice(end + 4);
        }
        if (chunked ? head.endsWith('0\r\n\r\n') : Buffer.byteLength(head, 'latin1') >= bodyLeft) finish(null);
      };
      const timer = setTimeout(() => finish(new Error(`no complete answer within the batch's ${batchTimeoutMs / 1000} s`)), Math.max(1, deadline - Date.now()));
      s.on('data', onData);
      s.on('error', onError);
      s.on('close', onClose);
      s.once('connect', () => s.write(REQUEST));
    });
  }
}
