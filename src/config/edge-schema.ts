// The schema of the edge features: route actions (redirect, rewrite, header rules, allow
// lists, response compression), TLS listeners with several certificates, HTTP/2, and TLS and
// the PROXY protocol towards backends.
// schema.ts spreads these fields into its listener, route and pool sections; the leaves
// they share with it (header names, paths, CIDR blocks) are passed in, so there is one
// definition of each.

import { isMap } from 'yaml';
import { isHostName } from './net.ts';
import { INVALID, bool, dict, either, int, list, oneOf, optional, reader, required, scalarText, str, struct, withDefault } from './reader.ts';
import type { Reader } from './reader.ts';

export interface SharedLeaves {
  readonly headerName: Reader<string>;
  readonly absolutePath: (what: string) => Reader<string>;
  readonly cidr: Reader<string>;
  readonly filePath: Reader<string>;
}

const hostName = str('a host name such as example.com', (s) => (isHostName(s) ? null : `"${s}" is not a host name (must be a name such as example.com, without a port)`));

/** A header value written in the config: no control characters, which would split or end the header. */
const headerValue = reader('a header value', (node, path, cx) => {
  const value = scalarText('a header value')(node, path, cx);
  if (value === INVALID) return INVALID;
  if (/[\u0000-\u0008\u000a-\u001f\u007f]/.test(value)) return cx.fail(node, path, 'must not contain control characters such as line breaks');
  return value;
});

/** Headers a rule must not touch: they frame the message or name the target, which tandem sets itself. */
const RESERVED = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'proxy-connection']);

const REDIRECT_CODES = [301, 302, 303, 307, 308];

const redirectCode = reader('301, 302, 303, 307 or 308', (node, path, cx) => {
  const code = int(300, 399, 'a redirect status: 301, 302, 303, 307 or 308')(node, path, cx);
  if (code === INVALID) return INVALID;
  if (!REDIRECT_CODES.includes(code)) return cx.fail(node, path, `must be a redirect status: 301, 302, 303, 307 or 308 (got ${code})`);
  return code;
});

/** Media types compressed when a route says `compress: true`: text, and the structured formats written as text. */
export const COMPRESSIBLE_TYPES: readonly string[] = Object.freeze([
  'text/*', 'application/json', 'application/javascript', 'application/xml', 'application/xhtml+xml',
  'application/rss+xml', 'application/atom+xml', 'application/ld+json', 'application/manifest+json', 'image/svg+xml',
]);
/** Bodies of fewer bytes than this (as Content-Length gives them) are sent as they are by default: Traefik's 1024. */
export const COMPRESS_MIN_SIZE = 1024;

const mediaType = str('a media type such as text/html or text/*', (s) => (
  /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*\/([A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*|\*)$/.test(s) ? null : `"${s}" is not a media type (write type/subtype or type/*, without parameters)`));

const compressFields = struct({
  types: withDefault(list(mediaType, { min: 1, expects: 'a list of media types such as text/html or text/*' }), [...COMPRESSIBLE_TYPES]),
  minSize: withDefault(int(0, 1 << 30, 'a size in bytes from 0 to 1073741824'), COMPRESS_MIN_SIZE),
}, 'a mapping { types, minSize }');

const compress = either<{ types: string[]; minSize: number } | null>('true, false, or a mapping { types, minSize }', (node, leaf) => {
  if (isMap(node)) return compressFields;
  if (leaf === false) return reader('', () => null);
  if (leaf === true) return reader('', () => ({ types: [...COMPRESSIBLE_TYPES], minSize: COMPRESS_MIN_SIZE }));
  return null;
});

/** The fields of the edge features, keyed by the section they go into. */
export function edgeFields(leaves: SharedLeaves) {
  const ruleName = str('an HTTP header name', (s) => {
    // The shared header-name reader has already judged the syntax when this runs as a key.
    if (RESERVED.has(s.toLowerCase())) return `"${s}" is managed by tandem and cannot be set or removed by a rule (reserved: ${[...RESERVED].join(', ')})`;
    return null;
  });
  const name = reader(leaves.headerName.expects, (node, path, cx) => {
    const n = leaves.headerName(node, path, cx);
    return n === INVALID ? INVALID : ruleName(node, path, cx);
  });
  const rules = withDefault(struct({
    set: withDefault(dict(headerValue, { key: name, expects: 'a mapping of header names to values' }), new Map<string, string>()),
    remove: withDefault(list(name, { expects: 'a list of header names' }), []),
  }, 'a mapping { set, remove }'), { set: new Map<string, string>(), remove: [] as string[] });

  const route = {
    redirect: optional(struct({
      scheme: optional(oneOf(['http', 'https'])),
      host: optional(hostName),
      port: optional(int(1, 65_535, 'a port from 1 to 65535')),
      path: optional(leaves.absolutePath('a path')),
      code: withDefault(redirectCode, 302),
    }, 'a mapping { scheme, host, port, path, code }')),
    rewrite: optional(struct({
      stripPrefix: optional(leaves.absolutePath('a path prefix')),
      addPrefix: optional(leaves.absolutePath('a path prefix')),
    }, 'a mapping { stripPrefix, addPrefix }')),
    headers: optional(struct({ request: rules, response: rules }, 'a mapping { request, response }')),
    allow: optional(list(leaves.cidr, { min: 1, expects: 'a list of IP addresses or CIDR blocks' })),
    compress: optional(compress),
  };

  const certificate = struct({ cert: required(leaves.filePath), key: required(leaves.filePath) }, 'a mapping { cert, key }');
  const listener = {
    tls: optional(struct({
      cert: optional(leaves.filePath),
      key: optional(leaves.filePath),
      certificates: optional(list(certificate, { min: 1, expects: 'a list of { cert, key }' })),
      minVersion: withDefault(oneOf(['TLSv1.2', 'TLSv1.3']), 'TLSv1.2'),
      ciphers: optional(str('an OpenSSL cipher list')),
      clientCa: optional(leaves.filePath),
    }, 'a mapping { cert, key } or { certificates: [...] }')),
    http2: withDefault(bool(), false),
    // Unset: fast on plain HTTP/1.1 listeners, node where TLS, HTTP/2 or the PROXY protocol is on.
    engine: optional(oneOf(['fast', 'node'])),
    proxyProtocol: optional(struct({
      from: required(list(leaves.cidr, { min: 1, expects: 'a list of IP addresses or CIDR blocks' })),
    }, 'a mapping { from: [CIDR, ...] }')),
  };

  const pool = {
    tls: optional(struct({
      ca: optional(leaves.filePath),
      servername: optional(hostName),
      verify: withDefault(bool(), true),
      cert: optional(leaves.filePath),
      key: optional(leaves.filePath),
    }, 'a mapping { ca, servername, verify, cert, key }')),
    // HAProxy's send-proxy (v1) and send-proxy-v2 (v2).
    proxyProtocol: optional(oneOf(['v1', 'v2'])),
  };
  return { route, listener, pool };
}
