// HTTP/2 frames written by hand on a raw TCP socket, for tests of what well-behaved
// clients never send: floods of SETTINGS and PING, streams past the limit, HPACK bombs.
// Only the few frame types and HPACK forms those tests need.

import { connect, type Socket } from 'node:net';
import { once } from 'node:events';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7 } as const;
export const FLAG = { END_STREAM: 1, END_HEADERS: 4, ACK: 1 } as const;

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  readonly payload: Buffer;
}

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** HPACK integer with an `n`-bit prefix whose high bits are `first`. */
export function hpackInt(value: number, n: number, first = 0): Buffer {
  const max = (1 << n) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest & 0x7f) | 0x80);
    rest >>= 7;
  }
  out.push(rest);
  return Buffer.from(out);
}

/** A literal field with a new name: added to the dynamic table when `index` (HPACK §6.2.1). */
export function literal(name: string, value: string, index = false): Buffer {
  return Buffer.concat([Buffer.from([index ? 0x40 : 0x00]), hpackInt(name.length, 7), Buffer.from(name), hpackInt(value.length, 7), Buffer.from(value)]);
}

/** A GET's header block: :method GET, :scheme http, :path given, :authority given. */
export function getHeaders(path: string, authority: string): Buffer {
  return Buffer.concat([Buffer.from([0x82, 0x86]), hpackInt(4, 4), hpackInt(path.length, 7), Buffer.from(path),
    hpackInt(1, 4), hpackInt(authority.length, 7), Buffer.from(authority)]);
}

/** A connection that has sent the preface and an empty SETTINGS, and parses what comes back. */
export class RawH2 {
  readonly socket: Socket;
  readonly frames: Frame[] = [];
  closed = false;
  private buffer = Buffer.alloc(0);

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {});
    socket.once('close', () => { this.closed = true; });
  }

  static async open(port: number): Promise<RawH2> {
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const raw = new RawH2(socket);
    raw.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]));
    return raw;
  }

  /** Writes unless the server has closed the connection; says whether it wrote. */
  write(data: Buffer): boolean {
    if (this.closed || this.socket.destroyed) return false;
    this.socket.write(data);
    return true;
  }

  /** The first GOAWAY's error code, or null. */
  goaway(): number | null {
    const f = this.frames.find((x) => x.type === FRAME.GOAWAY);
    return f === undefined ? null : f.payload.readUInt32BE(4);
  }

  /** Error codes of RST_STREAM frames received. */
  resets(): number[] {
    return this.frames.filter((x) => x.type === FRAME.RST_STREAM).map((x) => x.payload.readUInt32BE(0));
  }

  /** Resolves when the server has closed the connection; rejects after `ms`. */
  async ended(ms = 20_000): Promise<void> {
    if (this.closed) return;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        // Not events.once: it rejects on the 'error' a reset connection emits first.
        new Promise((resolve) => this.socket.once('close', resolve)),
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`connection still open after ${ms} ms; frames: ${this.frames.map((f) => f.type).join(',')}`)), ms); }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 9) {
      const length = this.buffer.readUIntBE(0, 3);
      if (this.buffer.length < 9 + length) return;
      this.frames.push({ type: this.buffer[3], flags: this.buffer[4], stream: this.buffer.readUInt32BE(5) & 0x7fffffff, payload: this.buffer.subarray(9, 9 + length) });
      this.buffer = this.buffer.subarray(9 + length);
    }
  }
}
