// Parsers for the network values of a config: host:port, backend URLs, CIDR blocks,
// VIP addresses. Each returns `{ value }` or one message saying what is wrong and what
// would be valid, ready to be placed after the key path.

import { isIP, isIPv4, isIPv6, SocketAddress } from 'node:net';

export type Parsed<T> = { readonly value: T } | string;

export interface HostPort {
  /** Host name or IP; IPv6 without brackets, as `listen()` and `connect()` want it. */
  readonly host: string;
  readonly port: number;
}

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;

/** A DNS name or an IPv4 address (IPv6 is checked by the callers that allow it). */
export function isHostName(host: string): boolean {
  if (host.length === 0 || host.length > 253) return false;
  const labels = host.split('.');
  if (!labels.every((l) => LABEL.test(l))) return false;
  // 300.1.2.3 passes the label rule but is a broken IPv4 address, not a name.
  if (labels.every((l) => /^\d+$/.test(l))) return isIPv4(host);
  return true;
}

/** `host:port` or `[v6]:port`, with the port from `minPort` to 65535. */
export function parseHostPort(text: string, minPort = 0): Parsed<HostPort> {
  const valid = `must be host:port or [ipv6]:port with a port from ${minPort} to 65535, e.g. ${minPort === 0 ? '0.0.0.0:8080' : '10.0.0.11:7946'}`;
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close === -1 || text[close + 1] !== ':') return `not a valid address (${valid}; got "${text}")`;
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!isIPv6(host)) return `"${host}" is not an IPv6 address (${valid})`;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon === -1) return `has no port (${valid}; got "${text}")`;
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) {
      return isIPv6(host) ? `an IPv6 address needs brackets (write [${host}]:${portText})` : `not a valid address (${valid}; got "${text}")`;
    }
    if (!isHostName(host)) return `"${host}" is not a valid host name or IPv4 address (${valid})`;
  }
  if (!/^\d{1,5}$/.test(portText)) return `"${portText}" is not a port (${valid})`;
  const port = Number(portText);
  if (port < minPort || port > 65535) return `port ${port} is out of range (${valid})`;
  return { value: { host: host.toLowerCase(), port } };
}

export interface BackendUrl {
  readonly origin: string;
  readonly protocol: 'http:' | 'https:';
  readonly host: string;
  readonly port: number;
}

/** An http(s) URL naming a server only: no path, query, fragment or credentials. */
export function parseServerUrl(text: string): Parsed<BackendUrl> {
  const valid = 'must be http:// or https:// with a host and optional port only, e.g. http://10.0.0.21:8080';
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `not a valid URL (${valid}; got "${text}")`;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return `scheme ${url.protocol.slice(0, -1)} is not supported (${valid})`;
  if (url.username !== '' || url.password !== '') return `must not contain credentials (${valid})`;
  if (url.pathname !== '/' && url.pathname !== '') return `must not have a path, got "${url.pathname}" (${valid})`;
  if (url.search !== '' || text.includes('?')) return `must not have a query (${valid})`;
  if (url.hash !== '' || text.includes('#')) return `must not have a fragment (${valid})`;
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  if (host === '') return `has no host (${valid})`;
  const port = url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port);
  if (port === 0) return `port 0 cannot be connected to (${valid})`;
  return { value: { origin: url.origin, protocol: url.protocol, host, port } };
}

/** An IP address or CIDR block, returned as a CIDR block (`127.0.0.1` → `127.0.0.1/32`). */
export function parseCidr(text: string): Parsed<string> {
  const valid = 'must be an IP address or a CIDR block, e.g. 10.0.0.0/8 or ::1';
  const slash = text.indexOf('/');
  const ip = slash === -1 ? text : text.slice(0, slash);
  const family = isIP(ip);
  if (family === 0) return `"${ip}" is not an IP address (${valid})`;
  const bits = family === 4 ? 32 : 128;
  if (slash === -1) return { value: `${ip.toLowerCase()}/${bits}` };
  const prefixText = text.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText) || prefix > bits) return `prefix /${prefixText} is out of range (${valid}, prefix 0 to ${bits})`;
  return { value: `${ip.toLowerCase()}/${prefix}` };
}

/**
 * A VIP: an address with its prefix length, `10.0.0.100/24` or `fd00::100/64`. The
 * address comes back in the canonical form `ip` prints (`FD00:0::100` → `fd00::100`), so
 * the hook, the events and duplicate checks all compare the same text.
 */
export function parseVipAddress(text: string): Parsed<{ readonly ip: string; readonly prefix: number; readonly family: 4 | 6 }> {
  const valid = 'must be an IPv4 or IPv6 address with a prefix length, e.g. 10.0.0.100/24';
  const slash = text.indexOf('/');
  if (slash === -1) return `has no prefix length (${valid}; got "${text}")`;
  const ip = text.slice(0, slash);
  const family = isIP(ip);
  if (family === 0) return `"${ip}" is not an IP address (${valid})`;
  if (ip.includes('%')) return `"${ip}" has a zone index; a VIP names its interface separately (${valid})`;
  const bits = family === 4 ? 32 : 128;
  const prefixText = text.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText) || prefix < 1 || prefix > bits) return `prefix /${prefixText} is out of range (${valid}, prefix 1 to ${bits})`;
  return { value: { ip: canonicalIp(ip, family), prefix, family: family as 4 | 6 } };
}

/** The canonical text of a valid IP address (RFC 5952 for IPv6: lower case, longest zero run as ::), as inet_ntop and `ip` write it. */
export function canonicalIp(ip: string, family: number = isIP(ip)): string {
  return new SocketAddress({ address: ip, family: family === 6 ? 'ipv6' : 'ipv4' }).address;
}

/** True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  if (isIPv4(host)) return host.startsWith('127.');
  if (host.toLowerCase().startsWith('::ffff:')) return isLoopback(host.slice(7));
  return false;
}
