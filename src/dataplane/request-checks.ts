import type { IncomingMessage } from 'node:http';
import { errors, type ErrorSpec } from '../errors.ts';

// What llhttp accepts but a proxy must not pass on as it is. llhttp (strict: tandem
// never sets insecureHTTPParser) already refuses conflicting framing, bare LF, obs-fold,
// invalid names and control characters; these checks cover what is valid syntax but
// ambiguous, and put the request into the one form the router and the forwarder read:
// routing and forwarding both take the Host from `req.headers.host` and the path from
// `req.url`, never from the raw lines again.

/**
 * Request fields that may appear once. node:http keeps the first of each and drops the
 * rest, while a backend may take another copy (the last, or both): two Host headers would
 * route on one and reach the backend with the other. RFC 9110 §5.3 makes a repeat of a
 * singleton field invalid; HAProxy and nginx answer 400, and so does tandem.
 */
const SINGLETONS = new Set([
  'host', 'content-length', 'content-type', 'authorization', 'proxy-authorization',
  'from', 'if-modified-since', 'if-unmodified-since', 'max-forwards', 'referer', 'user-agent',
]);

/** `scheme://authority[path]` of an absolute-form request target (RFC 9112 §3.2.2). */
const ABSOLUTE_FORM = /^https?:\/\/([^/?#@]+)([/?][^#]*)?$/i;

/**
 * Null when the request may be routed as it is (after putting an absolute-form target
 * into origin form), else the error to answer with. Runs before routing, per request:
 * the common case (no repeated names, origin-form target, a Host) costs a count of the
 * header object's keys and two comparisons.
 */
export function checkRequest(req: IncomingMessage): ErrorSpec | null {
  // HTTP/0.9 (a request line without a version) has no headers and no status line.
  // HTTP/2 requests come from http2.ts, through the same handler.
  const major = req.httpVersionMajor;
  if (major !== 1 && major !== 2) return errors.BAD_REQUEST;
  const headers = req.headers;
  let names = 0;
  for (const _ in headers) names++;
  // Fewer names than header lines: some name repeats (node folds repeats into one key).
  if (names * 2 !== req.rawHeaders.length && repeatsSingleton(req.rawHeaders)) return errors.DUPLICATE_HEADER;
  // The target forms and Host rules below are HTTP/1.1's: in HTTP/2, nghttp2 checked the
  // pseudo-headers, and http2.ts gave the request its Host from :authority.
  if (major === 2) return null;
  const url = req.url ?? '';
  if (url.charCodeAt(0) !== 47 /* / */ && url !== '*') {
    // RFC 9112 §3.2.2: a server must accept the absolute form, and its authority
    // replaces any Host header.
    const m = ABSOLUTE_FORM.exec(url);
    if (m === null) return errors.BAD_REQUEST;
    const path = m[2] ?? '';
    req.url = path === '' ? '/' : path.charCodeAt(0) === 47 ? path : `/${path}`;
    headers.host = m[1];
    return null;
  }
  if (headers.host === undefined) {
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is invalid. HTTP/1.0 may leave it
    // out; it is forwarded with an empty Host rather than the backend's own address.
    if (req.httpVersionMinor !== 0) return errors.MISSING_HOST;
    headers.host = '';
  }
  return null;
}

function repeatsSingleton(raw: readonly string[]): boolean {
  let seen: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (!SINGLETONS.has(name)) continue;
    seen ??= new Set();
    if (seen.has(name)) return true;
    seen.add(name);
  }
  return false;
}

/** Upgrades tandem proxies (WebSocket); any other (h2c, TLS/1.0) is served as a plain HTTP/1.1 request. */
export function isWebSocketUpgrade(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade;
  return upgrade !== undefined && upgrade.trim().toLowerCase() === 'websocket';
}
