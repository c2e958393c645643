import { isIPv4, isIPv6, type Socket } from 'node:net';
import type { Server } from 'node:net';
import { TrustedProxies, clientAddressOf } from './headers.ts';

// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2), accepted on a
// listener from the load balancers in front of it. A connection from one of the
// configured sources must open with a PROXY header; the client address it names then
// stands for the peer everywhere (X-Forwarded-For, allow lists, sticky keys, logs). A
// connection from anywhere else is read as it is: a header from an untrusted peer is
// never believed. The parser is strict: a header that is malformed, too long, or does
// not arrive within the listener's headers timeout closes the connection.
//
// npm's proxy-protocol-js parses a whole header from a string with a regular expression
// and does not check addresses or ports; what a listener needs is a streaming reader that
// knows where the header ends and refuses anything doubtful, which this is.

const V1_MAX = 107;
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** Addresses (36 bytes for IPv6) plus room for TLVs; longer headers are refused. */
const V2_MAX_LENGTH = 2048;
const PORT = /^(0|[1-9][0-9]{0,4})$/;

export interface ProxiedPeer {
  /** The client's address and port; null for a LOCAL (health check) or UNKNOWN header. */
  readonly address: string | null;
  readonly port: number | null;
  /** The address and port the client connected to (the balancer's listener); null with `address`. */
  readonly destination: string | null;
  readonly destinationPort: number | null;
}

export type ParseResult =
  | { readonly state: 'more' }
  | { readonly state: 'error'; readonly reason: string }
  | { readonly state: 'done'; readonly length: number; readonly peer: ProxiedPeer };

const MORE: ParseResult = { state: 'more' };
const NONE: ProxiedPeer = { address: null, port: null, destination: null, destinationPort: null };

/** Reads a PROXY header (v1 or v2) from the start of `data`. */
export function parseProxyHeader(data: Buffer): ParseResult {
  if (data.length === 0) return MORE;
  if (data[0] === 0x0d) return parseV2(data);
  if (data[0] === 0x50 /* P */) return parseV1(data);
  return { state: 'error', reason: 'no PROXY header' };
}

function parseV1(data: Buffer): ParseResult {
  const prefix = Buffer.from('PROXY ', 'latin1');
  const n = Math.min(data.length, prefix.length);
  if (!data.subarray(0, n).equals(prefix.subarray(0, n))) return { state: 'error', reason: 'no PROXY header' };
  const end = data.indexOf('\r\n', 0, 'latin1');
  if (end < 0) return data.length >= V1_MAX ? { state: 'error', reason: 'v1 header longer than 107 bytes' } : MORE;
  if (end + 2 > V1_MAX) return { state: 'error', reason: 'v1 header longer than 107 bytes' };
  const parts = data.toString('latin1', 0, end).split(' ');
  if (parts[1] === 'UNKNOWN') return { state: 'done', length: end + 2, peer: NONE };
  if (parts.length !== 6) return { state: 'error', reason: 'v1 header does not have 6 fields' };
  const [, family, src, dst, srcPort, dstPort] = parts;
  const valid = family === 'TCP4' ? isIPv4 : family === 'TCP6' ? isIPv6 : null;
  if (valid === null) return { state: 'error', reason: `v1 protocol ${JSON.stringify(family)} is not TCP4, TCP6 or UNKNOWN` };
  if (!valid(src) || !valid(dst)) return { state: 'error', reason: `v1 addresses are not ${family} addresses` };
  if (!validPort(srcPort) || !validPort(dstPort)) return { state: 'error', reason: 'v1 ports are not 0 to 65535' };
  return { state: 'done', length: end + 2, peer: { address: src, port: Number(srcPort), destination: dst, destinationPort: Number(dstPort) } };
}

function validPort(p: string): boolean {
  return PORT.test(p) && Number(p) <= 65_535;
}

function parseV2(data: Buffer): ParseResult {
  const n = Math.min(data.length, V2_SIGNATURE.length);
  if (!data.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) return { state: 'error', reason: 'no PROXY header' };
  if (data.length < 16) return MORE;
  const versionCommand = data[12];
  if (versionCommand >> 4 !== 2) return { state: 'error', reason: `v2 version ${versionCommand >> 4} is not 2` };
  const command = versionCommand & 0x0f;
  if (command > 1) return { state: 'error', reason: `v2 command ${command} is not LOCAL or PROXY` };
  const length = data.readUInt16BE(14);
  if (length > V2_MAX_LENGTH) return { state: 'error', reason: `v2 header of ${length} bytes is longer than ${V2_MAX_LENGTH}` };
  if (data.length < 16 + length) return MORE;
  const total = 16 + length;
  // LOCAL: the balancer's own connection (a health check); the peer is the real one.
  if (command === 0) return { state: 'done', length: total, peer: NONE };
  const family = data[13] >> 4;
  const transport = data[13] & 0x0f;
  if (family === 0) return { state: 'done', length: total, peer: NONE };
  if (transport !== 1) return { state: 'error', reason: 'v2 transport is not STREAM' };
  if (family === 1) {
    if (length < 12) return { state: 'error', reason: 'v2 IPv4 addresses are truncated' };
    const address = `${data[16]}.${data[17]}.${data[18]}.${data[19]}`;
    const destination = `${data[20]}.${data[21]}.${data[22]}.${data[23]}`;
    return { state: 'done', length: total, peer: { address, port: data.readUInt16BE(24), destination, destinationPort: data.readUInt16BE(26) } };
  }
  if (family === 2) {
    if (length < 36) return { state: 'error', reason: 'v2 IPv6 addresses are truncated' };
    const address = clientAddressOf(ipv6At(data, 16));
    const destination = clientAddressOf(ipv6At(data, 32));
    return { state: 'done', length: total, peer: { address, port: data.readUInt16BE(48), destination, destinationPort: data.readUInt16BE(50) } };
  }
  return { state: 'error', reason: `v2 address family ${family} is not supported` };
}

function ipv6At(data: Buffer, offset: number): string {
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(data.readUInt16BE(offset + i * 2).toString(16));
  return compactIPv6(groups);
}

/** `0:0:0:0:0:0:0:1` as `::1`, the form node gives peer addresses in. */
function compactIPv6(groups: string[]): string {
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLength) {
      best = i;
      bestLength = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLength).join(':')}`;
}

/**
 * Reads PROXY headers on one listener's connections from trusted sources, before the
 * listener's own handling (HTTP, TLS or the HTTP/2 sniffer) sees any byte.
 */
export class ProxyProtocolReader {
  private readonly trusted: TrustedProxies;
  /** Peers named by PROXY headers, by the TCP connection's `address:port`. */
  private readonly peers = new Map<string, ProxiedPeer>();

  constructor(sources: readonly string[]) {
    this.trusted = new TrustedProxies(sources);
  }

  /** Runs every 'connection' listener of `server` only once the header has been read. */
  attach(server: Server, timeout: () => number): void {
    const listeners = server.listeners('connection') as ((this: Server, socket: Socket) => void)[];
    server.removeAllListeners('connection');
    server.on('connection', (socket: Socket) => {
      if (!this.trusted.trusts(socket.remoteAddress)) {
        for (const l of listeners) l.call(server, socket);
        return;
      }
      this.read(socket, timeout(), (peer) => {
        const key = `${socket.remoteAddress}:${socket.remotePort}`;
        if (peer.address !== null) {
          this.peers.set(key, peer);
          socket.once('close', () => this.peers.delete(key));
        }
        for (const l of listeners) l.call(server, socket);
      });
    });
  }

  /** What a PROXY header named for this connection (or the TLS socket over it), or null. */
  peerOf(socket: Socket): ProxiedPeer | null {
    return this.peers.get(`${socket.remoteAddress}:${socket.remotePort}`) ?? null;
  }

  private read(socket: Socket, timeout: number, then: (peer: ProxiedPeer) => void): void {
    let seen: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), timeout);
    const onData = (chunk: Buffer) => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const result = parseProxyHeader(seen);
      if (result.state === 'more') return;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('close', onClose);
      if (result.state === 'error') {
        socket.destroy();
        return;
      }
      socket.pause();
      if (result.length < seen.length) socket.unshift(seen.subarray(result.length));
      then(result.peer);
      // node:http reads through a 'data' listener, which does not restart a paused
      // socket; node:tls and node:http2 read what is buffered on their own.
      if (socket.listenerCount('data') > 0) socket.resume();
    };
    const onClose = () => clearTimeout(timer);
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.on('error', () => socket.destroy());
  }
}
