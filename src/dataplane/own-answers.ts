// tandem's own answers: the JSON error bodies of src/errors.ts, written on a response or,
// for upgrade requests and requests that could not be parsed, on the raw connection.
// Each returns the body bytes it sent, for the access log.

import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { ErrorSpec } from '../errors.ts';

const bodies = new Map<string, string>();

/** The JSON body of one of tandem's own answers; one string per code and pool, made once. */
export function errorBody(spec: ErrorSpec, pool: string): string {
  const key = `${spec.code}\0${pool}`;
  let body = bodies.get(key);
  if (body === undefined) {
    body = JSON.stringify({ error: spec.code, message: spec.message, pool: pool || undefined }) + '\n';
    if (bodies.size < 10_000) bodies.set(key, body);
  }
  return body;
}

/**
 * Answers with one of tandem's own errors, outside a proxied exchange or instead of one;
 * returns the body bytes sent (none to a HEAD request).
 */
export function answerError(req: IncomingMessage, res: ServerResponse, spec: ErrorSpec, pool: string, close: boolean,
  requestId: string, retryAfter = 0): number {
  const body = errorBody(spec, pool);
  const length = Buffer.byteLength(body);
  const headers: Record<string, string | number> = {
    'content-type': 'application/json',
    'content-length': length,
    'cache-control': 'no-store',
    'x-request-id': requestId,
  };
  if (retryAfter > 0) headers['retry-after'] = String(retryAfter);
  if (close) headers.connection = 'close';
  res.writeHead(spec.status, headers);
  res.end(body);
  return req.method === 'HEAD' ? 0 : length;
}

/** Writes one of tandem's own answers on a raw socket and closes it; returns the body bytes. */
export function writeRaw(socket: Duplex, spec: ErrorSpec, pool: string, requestId: string): number {
  const body = errorBody(spec, pool);
  const length = Buffer.byteLength(body);
  socket.end(`HTTP/1.1 ${spec.status} ${STATUS_CODES[spec.status] ?? ''}\r\n`
    + `content-type: application/json\r\ncontent-length: ${length}\r\nx-request-id: ${requestId}\r\nconnection: close\r\n\r\n${body}`);
  return length;
}
