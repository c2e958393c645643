import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { errors, type ErrorSpec } from '../errors.ts';
import { rejectInFlight } from './forward.ts';
import type { RouteRuntime } from './generation.ts';
import type { ForwardContext } from './headers.ts';
import { errorBody, writeRaw } from './own-answers.ts';
import { breakAfter, type Connection } from './pipeline.ts';
import { newRequestId } from './request-id.ts';
import type { ListenerState } from './server.ts';

// What a client sent that llhttp refused, on either engine: the right 4xx (431 for a
// head too large, 408 for one too slow, 501 for a well-formed request line with a method
// llhttp does not know, else 400), after the answers owed on the connection, which then
// closes; nothing else is affected.

/** The answer to a parse error of llhttp's `code`; `raw`: the bytes it was reading. */
export function clientErrorSpec(code: string | undefined, raw: Buffer | undefined): ErrorSpec {
  return code === 'HPE_HEADER_OVERFLOW' ? errors.HEADERS_TOO_LARGE
    : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? errors.REQUEST_TIMEOUT
      : code === 'HPE_INVALID_METHOD' && wellFormedLine(raw) ? errors.METHOD_NOT_IMPLEMENTED : errors.BAD_REQUEST;
}

/** A request line of the right shape with a method llhttp does not know (501), not garbage (400). */
function wellFormedLine(raw: Buffer | undefined): boolean {
  return raw !== undefined && /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^\s]+ HTTP\/1\.[01]\r\n/.test(raw.toString('latin1', 0, Math.min(raw.length, 8192)));
}

/** Reports an answer written on the raw connection: to an upgrade request, or to one that could not be parsed (`req` null). */
export function answeredRaw(plane: ListenerState, req: IncomingMessage | null, ctx: ForwardContext, route: RouteRuntime | null, start: number,
  spec: ErrorSpec, bytes: number, requestId: string, traceId: string | null): void {
  plane.observer.logged({
    req, ctx, route, backend: null, status: spec.status, start, bytes, received: 0, retries: 0, errorCode: spec.code,
    requestId, traceId, upgrade: req !== null,
  });
}

/**
 * A request after those answered or in flight could not be read: `spec` once they are
 * answered (at once on an idle connection), and the connection closes. Logged with an id
 * of its own: there is no request to take one from.
 */
export function refuseMalformed(plane: ListenerState, conn: Connection, spec: ErrorSpec): void {
  const requestId = newRequestId();
  if (conn.busy) breakAfter(conn, spec, requestId);
  else writeRaw(conn.socket, spec, '', requestId);
  answeredRaw(plane, null, conn, null, performance.now(), spec, Buffer.byteLength(errorBody(spec, '')), requestId, null);
}

/** node:http's clientError: `conn` is the connection's context, if it got one. */
export function clientError(plane: ListenerState, err: Error & { code?: string; rawPacket?: Buffer }, socket: Duplex, conn: Connection | undefined): void {
  // A socket already written to or gone is just destroyed. The error may come after the
  // head was parsed and the request dispatched (a bad chunk size, an invalid
  // Transfer-Encoding): its response, not yet started, answers.
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || (inFlight && inFlight.headersSent && !inFlight.req.complete)) {
    socket.destroy();
    return;
  }
  const spec = clientErrorSpec(err.code, err.rawPacket);
  if (inFlight && !inFlight.req.complete) {
    // The error is in the body of the request being served: its exchange is logged.
    rejectInFlight(inFlight, spec);
    return;
  }
  if (conn !== undefined) refuseMalformed(plane, conn, spec);
  else writeRaw(socket, spec, '', newRequestId());
}
