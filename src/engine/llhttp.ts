// llhttp through Node's own binding: the parser node:http runs, with the same strict
// settings (no lenient flags), so the fast engine accepts exactly what node:http accepts.
// `_http_common` is what node:http itself loads; reached through require it carries no
// deprecation warning (process.binding('http_parser') does).
//
// A parser made here consumes its socket's handle, as node:http's server does: reads go
// from libuv straight into llhttp in C++, with no Buffer and no 'data' event per read. Its
// callbacks run with `this` = the parser, whose `owner` is the connection it serves, so
// no closure is made per connection or per request. Readable's pause() no longer stops
// reads on such a socket: pauseRead() and resumeRead() stop and start the handle itself.

import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

/** llhttp's headers-complete callback: returns 0, 1 (no body follows) or 2 (no body, upgrade). */
export type HeadersComplete = (this: Parser, major: number, minor: number, headers: string[] | undefined, method: number,
  url: string | undefined, status: number, message: string | undefined, upgrade: boolean, keepAlive: boolean) => number;

export interface ParserOwner {
  /** Head fields handed over before the head was complete (heads longer than one read). */
  headers: string[];
  url: string;
}

export interface Parser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | Error;
  finish(): number | Error | undefined;
  consume(handle: unknown): void;
  unconsume(): void;
  getCurrentBuffer(): Buffer;
  close(): void;
  remove(): void;
  owner: ParserOwner | null;
  [callback: number]: unknown;
}

interface ParserClass {
  new(): Parser;
  readonly REQUEST: number;
  readonly RESPONSE: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
}

const common = createRequire(import.meta.url)('_http_common') as { HTTPParser: ParserClass; methods: string[] };
export const HTTPParser = common.HTTPParser;
/** llhttp's method numbers to names. */
export const METHODS: readonly string[] = common.methods;

export interface ParserCallbacks {
  readonly head: HeadersComplete;
  readonly body: (this: Parser, chunk: Buffer) => void;
  readonly end: (this: Parser) => void;
  /** After each read is parsed: the bytes parsed, or the parse error. */
  readonly execute: (this: Parser, ret: number | Error) => void;
}

interface Handle {
  readStart(): number;
  readStop(): number;
  _consumed?: boolean;
  /** net's own record of whether the handle reads: kept true to the fact, so net restarts reads once the handle is its own again. */
  reading: boolean;
}

type Reading = Socket & { _handle: Handle | null; stopped?: boolean };

/** A connection idle this long between messages gives its parser back (front.ts, upstream.ts: from their sweeps). */
export const PARK_AFTER_MS = 1000;

/**
 * With more parsers than this held (about 6 MB of them), a client connection idle
 * CROWDED_PARK_AFTER_MS gives its parser back (front.ts): a burst of thousands of
 * connections, each idle after one request, would otherwise hold a parser each for a
 * second, and malloc keeps what parsers freed among live objects hold.
 */
export const CROWDED_ABOVE = 1024;
export const CROWDED_PARK_AFTER_MS = 100;

/**
 * Parsers of one type and set of callbacks, kept for reuse. A parser is a native object of
 * about 6 KB (10,000 of them took 58-60 MB of malloc's heap), more than the rest of an idle
 * connection: a connection that waits idle gives its parser back here and takes one again
 * when bytes arrive, so 10,000 idle connections do not hold 10,000 parsers.
 */
export class ParserPool {
  private readonly type: number;
  private readonly callbacks: ParserCallbacks;
  private readonly limit: number;
  private readonly free: Parser[];
  /** Parsers taken and not given back or released: those connections hold now. */
  held: number;

  constructor(type: number, callbacks: ParserCallbacks, limit: number) {
    this.type = type;
    this.callbacks = callbacks;
    this.limit = limit;
    this.free = [];
    this.held = 0;
  }

  /**
   * A parser for `owner`. With `socket`, it consumes that socket's handle; without (TLS
   * sockets, whose handle is not a plain stream), the caller feeds it with execute().
   */
  take(owner: ParserOwner, maxHeaderSize: number, socket: Socket | null): Parser {
    const p = this.free.pop() ?? this.created();
    // initialize() resets llhttp and the header slots as for a new parser (node:http's free list does the same).
    p.initialize(this.type, {}, maxHeaderSize, 0);
    p.owner = owner;
    if (socket !== null) consume(p, socket);
    this.held++;
    return p;
  }

  /**
   * Takes back a parser between two messages; its socket's reads go to JS ('data') again.
   * Never from one of the parser's own callbacks (llhttp may still be executing on it).
   */
  give(p: Parser, socket: Socket): void {
    detach(p, socket);
    this.held--;
    if (this.free.length < this.limit) this.free.push(p);
    else p.close();
  }

  /** Gives the handle back to the socket (before handing the connection to node:http, or as it closes) and frees the parser. */
  release(p: Parser, socket: Socket | null): void {
    detach(p, socket);
    this.held--;
    // Never while llhttp may still be executing on this parser (a callback on the stack):
    // node:http closes its parsers on the next turn for the same reason.
    setImmediate(closeParser, p);
  }

  private created(): Parser {
    const p = new HTTPParser();
    const c = this.callbacks;
    p[HTTPParser.kOnHeaders] = onHeaders;
    p[HTTPParser.kOnHeadersComplete] = c.head;
    p[HTTPParser.kOnBody] = c.body;
    p[HTTPParser.kOnMessageComplete] = c.end;
    p[HTTPParser.kOnExecute] = c.execute;
    return p;
  }
}

function consume(p: Parser, socket: Socket): void {
  const handle = (socket as Reading)._handle;
  if (handle === null) return;
  p.consume(handle);
  handle._consumed = true;
}

/** Gives `socket`'s handle back (when the parser consumed it) and the parser up by its owner. */
function detach(p: Parser, socket: Socket | null): void {
  const handle = socket === null ? null : (socket as Reading)._handle;
  if (handle != null && handle._consumed === true) {
    p.unconsume();
    handle._consumed = false;
  }
  p.owner = null;
  p.remove();
}

/** Whether `socket`'s handle is a stream llhttp can consume (plain TCP, not TLS). */
export function consumable(socket: Socket): boolean {
  const handle = (socket as Reading)._handle as (Handle & { isStreamBase?: boolean }) | null;
  return handle !== null && handle.isStreamBase === true && handle._consumed !== true && socket.constructor.name === 'Socket';
}

function closeParser(p: Parser): void {
  p.close();
}

function onHeaders(this: Parser, headers: string[], url: string): void {
  const o = this.owner!;
  for (let i = 0; i < headers.length; i++) o.headers.push(headers[i]);
  o.url += url;
}

/** Stops reads of a socket whose handle a parser consumes (or of a plain one). */
export function pauseRead(s: Socket): void {
  const r = s as Reading;
  if (r.stopped === true) return;
  r.stopped = true;
  if (r._handle?._consumed === true) {
    r._handle.reading = false;
    r._handle.readStop();
  } else {
    s.pause();
  }
}

/** pauseRead() stopped the socket's reads and resumeRead() has not started them again. */
export function readPaused(s: Socket): boolean {
  return (s as Reading).stopped === true;
}

export function resumeRead(s: Socket): void {
  const r = s as Reading;
  if (r.stopped !== true) return;
  r.stopped = false;
  if (r._handle?._consumed === true) {
    r._handle.reading = true;
    r._handle.readStart();
  } else {
    s.resume();
  }
}

/**
 * After ParserPool.release(): the handle reads again, for whoever takes the socket. Its
 * Readable still waits on the read it asked for before the parser took the handle, so
 * reads must go on at the handle, as node:http leaves them when it lets a socket go.
 */
export function readAgain(s: Socket): void {
  const r = s as Reading;
  r.stopped = false;
  if (r._handle === null) return;
  r._handle.reading = true;
  r._handle.readStart();
}
