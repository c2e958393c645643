// Request ids and W3C trace context, read once per request before anything answers it.
//
// X-Request-Id: a client's (or an edge proxy's) id is kept when it is a sane token, else
// tandem makes one; either way the backend gets it, the client gets it back, and the
// access log shows it. A UUID v4 from crypto.randomUUID (node keeps a cache of random
// bytes for it) was measured at about 130 ns on the benchmark machine, a per-process
// prefix and counter at about 30 ns; the difference is under 0.1 % of a proxied request,
// and a random id tells clients nothing about how many requests a worker has served.
//
// traceparent (W3C Trace Context, level 1) passes to the backend unchanged when it is
// valid, with tracestate; an invalid one is dropped with its tracestate, as the
// specification asks of a participant that cannot parse it. tandem starts no trace and
// adds no span of its own: the trace id is only logged.

import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** The longest X-Request-Id kept from a request; longer ones are replaced. */
export const MAX_REQUEST_ID = 128;

/** A new request id. */
export const newRequestId: () => string = randomUUID;

/** 1..MAX_REQUEST_ID visible ASCII characters (0x21-0x7e): no spaces, controls, commas of folded repeats, or non-ASCII. */
export function saneRequestId(value: string): boolean {
  const n = value.length;
  if (n === 0 || n > MAX_REQUEST_ID) return false;
  for (let i = 0; i < n; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/**
 * The request's id: its X-Request-Id when sane, else a new one. Two X-Request-Id fields
 * reach here folded into one value with ", ", which is not sane: the request gets a new id.
 */
export function requestIdOf(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && saneRequestId(given) ? given : newRequestId();
}

/**
 * The trace id of a traceparent value, or null when the value is not a valid one
 * (https://www.w3.org/TR/trace-context/#traceparent-header): `version-traceid-parentid-flags`
 * in lower-case hex, version not ff, trace and parent ids not all zeros; version 00 is
 * exactly 55 characters, a later version may carry more after another dash. Two
 * traceparent fields arrive folded with ", " and are invalid.
 */
export function traceIdOf(value: string): string | null {
  if (value.length < 55) return null;
  if (value.length > 55 && (value.charCodeAt(55) !== 45 /* - */ || value.startsWith('00'))) return null;
  if (value.charCodeAt(2) !== 45 || value.charCodeAt(35) !== 45 || value.charCodeAt(52) !== 45) return null;
  if (!lowerHex(value, 0, 2) || value.startsWith('ff')) return null;
  if (!lowerHex(value, 3, 35) || !lowerHex(value, 36, 52) || !lowerHex(value, 53, 55)) return null;
  if (allZeros(value, 3, 35) || allZeros(value, 36, 52)) return null;
  return value.slice(3, 35);
}

function lowerHex(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

function allZeros(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (s.charCodeAt(i) !== 48) return false;
  return true;
}

/** The trace id of the request's traceparent, or null when it has none or an invalid one. */
export function traceOf(req: IncomingMessage): string | null {
  const tp = req.headers.traceparent;
  return typeof tp === 'string' ? traceIdOf(tp) : null;
}
