// A backend may send `100 Continue` although tandem never asks for one (it does not pass
// `Expect` on). HAProxy skips such an interim answer and relays the final one; undici,
// which does not support Expect: 100-continue, takes any 100 for a broken connection and
// destroys it, so the client would get a 502. Every upstream connection's reads go
// through this filter instead: where undici's parser is about to read the start of an
// answer, `HTTP/1.x 100` heads (no body, by RFC 9110) are dropped before it sees them.
// The other interim answers (102, 103) undici skips itself.
//
// "About to read the start of an answer" is the parser's own state: no status and no
// header of the answer read yet. It is looked at only for a chunk whose first byte is the
// `H` of a status line and whose status starts with 1: an ordinary answer costs two byte
// reads.

import type { Socket } from 'node:net';
import type buildConnectorType from 'undici/lib/core/connect.js';

const CONTINUE = [Buffer.from('HTTP/1.1 100'), Buffer.from('HTTP/1.0 100')];
const HEAD_END = Buffer.from('\r\n\r\n');
const EMPTY = Buffer.alloc(0);
/** A 100 head longer than undici's own header limit is not waited for: undici refuses it. */
const MAX_HELD = 16 * 1024;

/** The part of undici's HTTP/1.1 parser (kept on the socket) this filter reads. */
interface ParserState {
  readonly statusCode: number;
  readonly statusText: string;
  readonly headers: readonly unknown[];
}

let parserKey: symbol | null = null;

function parserOf(socket: Socket): ParserState | null | undefined {
  if (parserKey === null) {
    parserKey = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'parser') ?? null;
    if (parserKey === null) return undefined;
  }
  // undici sets it to null once the connection is upgraded or closed.
  return (socket as unknown as Record<symbol, ParserState | null | undefined>)[parserKey];
}

/** undici's parser has read nothing of the next answer yet. */
function atAnswerStart(socket: Socket): boolean {
  const p = parserOf(socket);
  return p != null && p.statusCode === 0 && p.statusText === '' && p.headers.length === 0;
}

/** `connect`, whose connections skip the `100 Continue` answers a backend sends unasked. */
export function skippingContinue(connect: buildConnectorType.connector): buildConnectorType.connector {
  return (options, callback) => connect(options, (err, socket) => {
    if (err !== null) return callback(err, null);
    filterReads(socket);
    callback(null, socket);
  });
}

function filterReads(socket: Socket): void {
  const read = socket.read;
  // Bytes that may be the start of a 100 head not complete yet.
  let held: Buffer | null = null;
  socket.read = function (this: Socket, size?: number) {
    let chunk = read.call(this, size) as Buffer | null;
    if (held !== null) {
      if (chunk === null) return null;
      chunk = Buffer.concat([held, chunk]);
      held = null;
    }
    // `HTTP/1.x 2..`: at byte 9 the status begins. Shorter chunks are checked in full.
    if (chunk === null || chunk.length === 0 || chunk[0] !== 0x48 || (chunk.length > 9 && chunk[9] !== 0x31) || !atAnswerStart(this)) return chunk;
    for (;;) {
      const kind = continueHead(chunk);
      if (kind === 'no') return chunk;
      const end = kind === 'yes' ? chunk.indexOf(HEAD_END) : -1;
      if (end < 0) {
        if (chunk.length > MAX_HELD) return chunk;
        // Too short to tell, or the head goes on in the next chunk.
        held = chunk;
        return EMPTY;
      }
      chunk = chunk.subarray(end + HEAD_END.length);
      if (chunk.length === 0) return EMPTY;
    }
  };
}

/** Whether `chunk` starts with a 100 status line ('yes'), cannot yet tell ('maybe'), or not. */
function continueHead(chunk: Buffer): 'yes' | 'maybe' | 'no' {
  for (const prefix of CONTINUE) {
    const n = Math.min(prefix.length, chunk.length);
    if (chunk.compare(prefix, 0, n, 0, n) !== 0) continue;
    if (chunk.length <= prefix.length) return 'maybe';
    // `HTTP/1.1 1000` is no 100: the code ends at a space (or the line's end).
    const next = chunk[prefix.length];
    if (next === 0x20 || next === 0x0d) return 'yes';
  }
  return 'no';
}
