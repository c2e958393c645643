import { isIPv4, isIPv6 } from 'node:net';
import type buildConnectorType from 'undici/lib/core/connect.js';
import type { BackendConfig, UpstreamTlsConfig } from '../config/types.ts';
import { upstreamTls } from './tls.ts';
import { buildConnector } from './undici.ts';

// The PROXY protocol towards backends (HAProxy's proxy-protocol.txt; `send-proxy` and
// `send-proxy-v2` in HAProxy): every connection to the backend opens with a header that
// names the client and the address it connected to, before anything else (before the TLS
// handshake to an https:// backend). The header is per connection, so whoever owns the
// connection decides what it says: the data plane gives each client connection upstream
// connections of its own (src/dataplane/private-upstreams.ts); health checks send a
// header that names no one (LOCAL in v2, UNKNOWN in v1), as HAProxy's checks do.

export type ProxyVersion = 'v1' | 'v2';

export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** `::ffff:192.0.2.1` as `192.0.2.1`: node's form of an IPv4 peer on a dual-stack socket. */
function plain(address: string): string {
  return address.startsWith('::ffff:') && isIPv4(address.slice(7)) ? address.slice(7) : address;
}

/**
 * The header for a connection from `source` to `destination`. When one is IPv4 and the
 * other IPv6 (a v6 client through a v4 listener), the IPv4 one is written as IPv4-mapped
 * IPv6, as HAProxy does: the protocol has one family per header.
 */
export function proxyHeader(version: ProxyVersion, source: Endpoint, destination: Endpoint): Buffer {
  let src = plain(source.address);
  let dst = plain(destination.address);
  if (!(isIPv4(src) || isIPv6(src)) || !(isIPv4(dst) || isIPv6(dst))) return localProxyHeader(version);
  const v4 = isIPv4(src) && isIPv4(dst);
  if (!v4) {
    if (isIPv4(src)) src = `::ffff:${src}`;
    if (isIPv4(dst)) dst = `::ffff:${dst}`;
  }
  if (version === 'v1') {
    return Buffer.from(`PROXY ${v4 ? 'TCP4' : 'TCP6'} ${src} ${dst} ${source.port} ${destination.port}\r\n`, 'latin1');
  }
  const length = v4 ? 12 : 36;
  const out = Buffer.alloc(16 + length);
  V2_SIGNATURE.copy(out, 0);
  out[12] = 0x21; // version 2, PROXY
  out[13] = v4 ? 0x11 : 0x21; // AF_INET or AF_INET6, STREAM
  out.writeUInt16BE(length, 14);
  const size = v4 ? 4 : 16;
  addressBytes(src, v4).copy(out, 16);
  addressBytes(dst, v4).copy(out, 16 + size);
  out.writeUInt16BE(source.port, 16 + 2 * size);
  out.writeUInt16BE(destination.port, 18 + 2 * size);
  return out;
}

/** A header that names no client: v2 LOCAL, v1 UNKNOWN; the backend keeps the TCP peer. */
export function localProxyHeader(version: ProxyVersion): Buffer {
  if (version === 'v1') return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  const out = Buffer.alloc(16);
  V2_SIGNATURE.copy(out, 0);
  out[12] = 0x20; // version 2, LOCAL
  return out;
}

function addressBytes(address: string, v4: boolean): Buffer {
  if (v4) return Buffer.from(address.split('.').map(Number));
  const out = Buffer.alloc(16);
  // Expand `a:b::c` (and a trailing dotted IPv4 part) into eight 16-bit groups.
  let text = address;
  const dotted = text.lastIndexOf(':') < text.indexOf('.') ? text.slice(text.lastIndexOf(':') + 1) : null;
  if (dotted !== null) {
    const [a, b, c, d] = dotted.split('.').map(Number);
    text = `${text.slice(0, text.lastIndexOf(':') + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, null];
  const left = head === '' ? [] : head.split(':');
  const right = tail === null || tail === '' ? [] : tail.split(':');
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

/**
 * Connectors for one backend that write a given header first: plain TCP, the header,
 * then (for https://) the TLS handshake over that connection with the pool's TLS
 * settings. The base connectors are built once per backend; each header costs one small
 * closure.
 */
export function headerConnector(backend: BackendConfig, tls: UpstreamTlsConfig | null, connectTimeout: number):
  (header: Buffer) => buildConnectorType.connector {
  const tcp = buildConnector({ timeout: connectTimeout, allowH2: false });
  const secure = upstreamTls(backend, tls, connectTimeout)?.connect ?? null;
  const port = String(backend.port);
  return (header) => (options, callback) => {
    tcp({ ...options, protocol: 'http:', port, httpSocket: undefined }, (err, socket) => {
      if (err !== null) {
        callback(err, null);
        return;
      }
      socket.write(header);
      if (secure === null) callback(null, socket);
      else secure({ ...options, httpSocket: socket }, callback);
    });
  };
}
