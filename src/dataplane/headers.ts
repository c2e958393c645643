import type { IncomingMessage } from 'node:http';
import { BlockList, isIPv6, type Socket } from 'node:net';
import type { PrivateUpstreams } from './private-upstreams.ts';
import type { ProxiedPeer } from './proxy-protocol.ts';

// Header rewriting for the hot path. Requests are rewritten from node's flat
// `rawHeaders` array into a flat array for undici: no header object is built; each
// name is lower-cased once and looked up in the small sets below.

/** Hop-by-hop headers (RFC 9110 §7.6.1) plus those undici manages itself. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'proxy-connection', 'proxy-authenticate', 'proxy-authorization',
  // undici refuses `expect`; node has already answered 100-continue to the client.
  'expect',
]);

/**
 * Headers tandem sets itself on the way up, and the trace context it passes on only when
 * valid (src/dataplane/request-id.ts): one set, so that the loop below pays one lookup.
 */
const REPLACED = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'host', 'x-request-id', 'traceparent', 'tracestate']);

/** Which incoming X-Forwarded-* headers to keep: those from trusted proxies only. */
export class TrustedProxies {
  private readonly list: BlockList;
  readonly empty: boolean;

  constructor(cidrs: readonly string[]) {
    this.list = new BlockList();
    for (const c of cidrs) {
      const slash = c.indexOf('/');
      const addr = slash < 0 ? c : c.slice(0, slash);
      const type = isIPv6(addr) ? 'ipv6' : 'ipv4';
      if (slash < 0) this.list.addAddress(addr, type);
      else this.list.addSubnet(addr, Number(c.slice(slash + 1)), type);
    }
    this.empty = cidrs.length === 0;
  }

  /** Evaluated once per client connection, not per request. */
  trusts(address: string | undefined): boolean {
    if (this.empty || address === undefined) return false;
    if (address.startsWith('::ffff:') && address.includes('.')) address = address.slice(7);
    return this.list.check(address, isIPv6(address) ? 'ipv6' : 'ipv4');
  }
}

/** Names listed in a Connection header value, lower case; null when there are none. */
function connectionTokens(req: IncomingMessage): Set<string> | null {
  const value = req.headers.connection;
  return value === undefined ? null : listedTokens(value);
}

export interface ForwardContext {
  /** The client address, as the peer socket saw it. */
  readonly clientAddress: string;
  /** The client connection comes from a trusted proxy: keep its X-Forwarded-* values. */
  readonly trusted: boolean;
  readonly proto: 'http' | 'https';
  /** Index of the listener in the current config, for per-listener metrics. */
  readonly listener: number;
  /** Where requests in flight are counted, across reloads (graceful stop waits on it). */
  readonly plane: { active: number };
  /** The listener the connection came in on, with its current (reloadable) settings. */
  readonly owner: { readonly config: { readonly sendTimeout: number } };
  /** The client connection; absent where no connection stands behind the context (benchmarks). */
  readonly socket?: Socket;
  /** What a trusted PROXY header named for the connection; null: none. */
  readonly proxied?: ProxiedPeer | null;
  /** Upstream connections private to this client connection (pools that send the PROXY protocol); null until needed. */
  privateUpstreams?: PrivateUpstreams | null;
  /** The fast engine serves the connection: its requests go upstream through the backend's fast upstream. */
  readonly fast?: boolean;
}

/**
 * The upstream request's headers as a flat [name, value, …] array: hop-by-hop headers
 * removed, X-Forwarded-For/Proto/Host, Via and X-Request-Id set; traceparent and
 * tracestate kept only when `trace` (the traceparent is valid).
 */
export function upstreamHeaders(req: IncomingMessage, ctx: ForwardContext, hostOverride: string | null,
  requestId: string, trace: boolean): string[] {
  const raw = req.rawHeaders;
  const out: string[] = [];
  const listed = connectionTokens(req);
  let xff: string | null = null;
  let xfp: string | null = null;
  let xfh: string | null = null;
  const host = req.headers.host ?? null;
  let via: string | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || (listed !== null && listed.has(lower))) continue;
    if (REPLACED.has(lower)) {
      const value = raw[i + 1];
      // Host is read from req.headers below, where request-checks.ts has settled it.
      if (lower === 'host' || lower === 'x-request-id') continue;
      if (lower === 'traceparent' || lower === 'tracestate') {
        if (trace) out.push(name, value);
        continue;
      }
      if (lower === 'x-forwarded-for') xff = xff === null ? value : `${xff}, ${value}`;
      else if (lower === 'x-forwarded-proto') xfp ??= value;
      else xfh ??= value;
      continue;
    }
    if (lower === 'via') {
      via = via === null ? raw[i + 1] : `${via}, ${raw[i + 1]}`;
      continue;
    }
    out.push(name, raw[i + 1]);
  }
  const client = ctx.clientAddress;
  if (ctx.trusted) {
    out.push('x-forwarded-for', xff === null ? client : `${xff}, ${client}`);
    out.push('x-forwarded-proto', xfp ?? ctx.proto);
    out.push('x-forwarded-host', xfh ?? host ?? '');
  } else {
    out.push('x-forwarded-for', client, 'x-forwarded-proto', ctx.proto);
    if (host !== null && host !== '') out.push('x-forwarded-host', host);
  }
  const version = req.httpVersion === '1.0' ? '1.0 tandem' : '1.1 tandem';
  out.push('via', via === null ? version : `${via}, ${version}`, 'x-request-id', requestId);
  // Host goes last so that a per-backend Host can replace it without a search.
  const upstreamHost = hostOverride ?? host;
  if (upstreamHost !== null) out.push('host', upstreamHost);
  return out;
}

/**
 * The response's headers as a flat [name, value, …] array for writeHead, in one pass
 * over undici's parsed object: hop-by-hop headers and those the Connection header lists
 * are left out, and the backend's X-Request-Id (the client gets the id tandem logged). Deleting keys from the object instead turned it into a slow dictionary
 * for node's writeHead to walk; a flat array is what node handles fastest.
 */
export function responseHeaders(headers: Record<string, string | string[] | undefined>): string[] {
  const out: string[] = [];
  const conn = headers.connection;
  const listed = conn === undefined ? null : listedTokens(Array.isArray(conn) ? conn.join(',') : conn);
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || (listed !== null && listed.has(name)) || name === 'x-request-id') continue;
    const value = headers[name];
    if (value === undefined) continue;
    if (typeof value === 'string') out.push(name, value);
    else for (let i = 0; i < value.length; i++) out.push(name, value[i]);
  }
  return out;
}

function listedTokens(value: string): Set<string> | null {
  // Almost every message says just this: no Set, no split.
  if (value === 'keep-alive' || value === 'close' || value === 'Keep-Alive') return null;
  let tokens: Set<string> | null = null;
  for (const t of value.split(',')) {
    const name = t.trim().toLowerCase();
    if (name !== '') (tokens ??= new Set()).add(name);
  }
  return tokens;
}

/** The client address without the IPv4-mapped prefix. */
export function clientAddressOf(address: string | undefined): string {
  if (address === undefined) return '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}
