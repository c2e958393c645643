// Crash detection faster than the lease. Every node keeps a TCP connection to every
// other node's HA port (the same port number as the UDP adverts). When a peer's process
// dies while its host lives, the peer's kernel closes its sockets at once and our end
// sees the close within a round trip, long before a lease could run out. A dead host or
// a cut link closes nothing; for those the lease is the bound.
//
// A connection counts only after a challenge: each side sends a random nonce and must
// get back an HMAC of it under the shared secret, naming the peer's node id and boot
// id. So a stranger cannot fake a peer's death by connecting and hanging up, and a
// restarted peer proves its new boot id.

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { HaNodeConfig } from '../../../config/types.ts';
import { proof, proofMatches } from './wire.ts';

/** Longest frame we accept; ours are about 150 bytes. */
const MAX_LINE = 512;

export interface HeartbeatOptions {
  readonly self: HaNodeConfig;
  readonly peers: readonly HaNodeConfig[];
  readonly key: Buffer;
  readonly boot: number;
  /** Pause between connection attempts to a peer that is not there. */
  readonly retryEvery: number;
}

interface Link {
  readonly socket: net.Socket;
  /** Our challenge to the other side. */
  readonly nonce: string;
  /** Node and boot the other side claims in its hello. */
  node: string | null;
  boot: number;
  verified: boolean;
  buffered: string;
}

/**
 * Heartbeat connections to all peers. Emits `alive(node, boot)` when a peer proves a
 * boot, `dead(node, boot)` when the last proven connection of that boot closes, and
 * `refused(node)` when nothing listens on a peer's port (its process is not running).
 */
export class Heartbeats extends EventEmitter<{
  alive: [node: string, boot: number];
  dead: [node: string, boot: number];
  refused: [node: string];
}> {
  private readonly opts: HeartbeatOptions;
  private readonly server: net.Server;
  private readonly links: Set<Link>;
  private readonly outgoing: Map<string, Link | null>;
  private readonly retryTimers: Set<NodeJS.Timeout>;
  private closed: boolean;

  constructor(opts: HeartbeatOptions) {
    super();
    this.opts = opts;
    this.links = new Set();
    this.outgoing = new Map();
    this.retryTimers = new Set();
    this.closed = false;
    this.server = net.createServer((socket) => this.adopt(socket));
    // A burst of strangers must not exhaust file descriptors: a few links per peer at most.
    this.server.maxConnections = Math.max(8, opts.peers.length * 4);
  }

  /** Binds the HA port for TCP and starts connecting to every peer. */
  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: this.opts.self.host, port: this.opts.self.port, exclusive: true }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    for (const peer of this.opts.peers) this.connect(peer);
  }

  /** Closes every connection and the listener; peers see our process leave. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
    for (const link of this.links) link.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private connect(peer: HaNodeConfig): void {
    if (this.closed) return;
    const local = this.opts.self.host;
    const socket = net.connect({
      host: peer.host,
      port: peer.port,
      // Leave from our own HA address, so the peer sees the address it knows us by.
      localAddress: local === '0.0.0.0' || local === '::' ? undefined : local,
    });
    const link = this.adopt(socket);
    this.outgoing.set(peer.id, link);
    const timer = setTimeout(() => socket.destroy(), Math.max(1000, this.opts.retryEvery * 5));
    socket.once('connect', () => clearTimeout(timer));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') this.emit('refused', peer.id);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      this.outgoing.set(peer.id, null);
      if (this.closed) return;
      const retry = setTimeout(() => {
        this.retryTimers.delete(retry);
        this.connect(peer);
      }, this.opts.retryEvery);
      this.retryTimers.add(retry);
    });
  }

  private adopt(socket: net.Socket): Link {
    const link: Link = { socket, nonce: randomBytes(16).toString('hex'), node: null, boot: -1, verified: false, buffered: '' };
    this.links.add(link);
    socket.setNoDelay(true);
    // Probes after a long silence clear out connections to a host that rebooted.
    socket.setKeepAlive(true, 5000);
    socket.setEncoding('utf8');
    // An unproven connection gets a short while to prove itself.
    const proveBy = setTimeout(() => {
      if (!link.verified) socket.destroy();
    }, Math.max(2000, this.opts.retryEvery * 10));
    const hello = () => this.send(link, { t: 'hello', n: this.opts.self.id, b: this.opts.boot, c: link.nonce });
    if (socket.connecting) socket.once('connect', hello);
    else hello();
    socket.on('data', (chunk: string) => this.onData(link, chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(proveBy);
      this.links.delete(link);
      if (!link.verified || link.node === null) return;
      for (const other of this.links) {
        if (other.verified && other.node === link.node && other.boot === link.boot) return;
      }
      if (!this.closed) this.emit('dead', link.node, link.boot);
    });
    return link;
  }

  private onData(link: Link, chunk: string): void {
    link.buffered += chunk;
    let nl: number;
    while ((nl = link.buffered.indexOf('\n')) >= 0) {
      const line = link.buffered.slice(0, nl);
      link.buffered = link.buffered.slice(nl + 1);
      this.onFrame(link, line);
    }
    if (link.buffered.length > MAX_LINE) link.socket.destroy();
  }

  private onFrame(link: Link, line: string): void {
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(line) as Record<string, unknown>;
    } catch {
      link.socket.destroy();
      return;
    }
    if (frame.t === 'hello' && link.node === null) {
      const node = frame.n;
      const boot = frame.b;
      const nonce = frame.c;
      if (typeof node !== 'string' || !this.opts.peers.some((p) => p.id === node)) return void link.socket.destroy();
      if (typeof boot !== 'number' || !Number.isSafeInteger(boot) || typeof nonce !== 'string' || nonce.length > 64) return void link.socket.destroy();
      link.node = node;
      link.boot = boot;
      this.send(link, { t: 'auth', m: proof(this.opts.key, nonce, this.opts.self.id, this.opts.boot).toString('hex') });
      return;
    }
    if (frame.t === 'auth' && link.node !== null && !link.verified) {
      if (!proofMatches(proof(this.opts.key, link.nonce, link.node, link.boot), frame.m)) return void link.socket.destroy();
      link.verified = true;
      // An older boot of the same node is gone: drop its links so they cannot linger.
      for (const other of this.links) {
        if (other !== link && other.node === link.node && other.boot !== link.boot) other.socket.destroy();
      }
      this.emit('alive', link.node, link.boot);
      return;
    }
    link.socket.destroy();
  }

  private send(link: Link, frame: object): void {
    if (!link.socket.destroyed) link.socket.write(JSON.stringify(frame) + '\n');
  }
}
