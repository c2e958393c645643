import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { ErrorSpec } from '../errors.ts';
import { writeRaw } from './own-answers.ts';
import type { ForwardContext } from './headers.ts';

// One request at a time per client connection, as HAProxy and nginx serve HTTP/1.1.
// node:http parses pipelined requests as fast as they arrive and emits each at once; a
// proxy that dispatched them all would let one client that writes 2,000 requests and
// never reads hold a backend connection per blocked response, starving everyone else.
// Here a request that arrives while another on the same connection is in flight is
// held, unsent, and the connection stops being read until it is that request's turn,
// so a client costs at most one upstream exchange and one read buffer of parsed
// requests.

/** Per-connection state: ForwardContext plus what the pipeline needs. */
export interface Connection extends ForwardContext {
  readonly socket: Socket;
  /** A request of this connection is being served. */
  busy: boolean;
  /** Requests parsed while another was in flight, oldest first; null until the first. */
  held: Held[] | null;
  /** A later request was malformed: answered with this (and its request id) once the earlier ones are. */
  broken: { readonly spec: ErrorSpec; readonly requestId: string } | null;
  /** An upgrade parsed behind requests not yet answered: it runs once they are (afterAnswers). */
  upgrade: (() => void) | null;
}

export interface Held {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly start: number;
  readonly serve: Serve;
}

export type Serve = (conn: Connection, req: IncomingMessage, res: ServerResponse, start: number) => void;

const kConnection = Symbol('tandem.connection');
type TrackedResponse = ServerResponse & { [kConnection]?: Connection };

/**
 * Serves the request now if the connection is idle, else holds it. `serve` runs with
 * the connection marked busy; it is released when the response closes.
 */
export function admit(conn: Connection, req: IncomingMessage, res: ServerResponse, start: number, serve: Serve): void {
  (res as TrackedResponse)[kConnection] = conn;
  res.once('close', onExchangeClosed);
  if (!conn.busy) {
    conn.busy = true;
    serve(conn, req, res, start);
    return;
  }
  if (conn.held === null) {
    conn.held = [];
    conn.socket.on('resume', keepPaused);
  }
  conn.held.push({ req, res, start, serve });
  conn.socket.pause();
}

function onExchangeClosed(this: TrackedResponse): void {
  const conn = this[kConnection];
  if (conn === undefined) return;
  conn.busy = false;
  const held = conn.held;
  const socket = conn.socket;
  if (held !== null && held.length > 0) {
    const next = held.shift()!;
    if (socket.destroyed) {
      held.length = 0;
      return;
    }
    conn.busy = true;
    if (held.length === 0) socket.resume();
    next.serve(conn, next.req, next.res, next.start);
    return;
  }
  if (conn.upgrade !== null) {
    const upgrade = conn.upgrade;
    conn.upgrade = null;
    // An answer that closed the connection leaves nothing to switch.
    if (!socket.destroyed && !socket.writableEnded) upgrade();
    return;
  }
  if (conn.broken !== null && !socket.destroyed) closeWith(conn);
}

/**
 * Runs `upgrade` once every request before it on the connection is answered. node:http
 * emits an upgrade as soon as it parses its head, even behind pipelined requests still in
 * flight; switching then would put the 101 and the new protocol's bytes before their
 * answers. (The fast engine hands an upgrade over only once nothing is owed.) The socket
 * does not flow meanwhile: node:http leaves it unread until the upgrade's handler reads it.
 */
export function afterAnswers(conn: Connection, upgrade: () => void): void {
  if (!conn.busy && (conn.held === null || conn.held.length === 0)) upgrade();
  else conn.upgrade = upgrade;
}

/** node:http resumes the socket when a body is read; while requests are held it stays paused. */
function keepPaused(this: Socket & { [kConnection]?: Connection }): void {
  const conn = this[kConnection];
  if (conn !== undefined && conn.held !== null && conn.held.length > 0) this.pause();
}

/**
 * A request after those in flight or held is malformed: they are answered first, then
 * the connection is closed with `spec` (the parser can read nothing more of it).
 */
export function breakAfter(conn: Connection, spec: ErrorSpec, requestId: string): void {
  conn.broken = { spec, requestId };
  if (!conn.busy) closeWith(conn);
}

function closeWith(conn: Connection): void {
  const { spec, requestId } = conn.broken!;
  conn.broken = null;
  writeRaw(conn.socket, spec, '', requestId);
}

/** Marks the socket so keepPaused can find its connection. */
export function attach(conn: Connection): void {
  (conn.socket as Socket & { [kConnection]?: Connection })[kConnection] = conn;
}
