// How the peer store's adverts travel: one datagram to every peer's address (unicast,
// works across routed networks and in clouds without multicast), and the same datagram
// to a link-local multicast group, as VRRP sends its adverts.
//
// The multicast copy is what heals a flapped link at once. After a link comes back, the
// kernel's neighbour entries for the peers are INCOMPLETE and it retries them only every
// retrans_time_ms (1 s by default): until then every unicast advert waits in the
// neighbour queue, and both nodes go on holding the VIP. A multicast frame goes to a MAC
// derived from the group and needs no neighbour entry, so the peer hears the holder's
// next advert as soon as the link carries frames. The receiver drops whichever copy comes
// second (same sender, boot and sequence number; see wire.ts).

import dgram from 'node:dgram';
import { isIP } from 'node:net';
import type { HaNodeConfig } from '../../../config/types.ts';
import { TandemError, errors } from '../../../errors.ts';
import type { Logger } from '../../../log.ts';

export interface TransportOptions {
  readonly self: HaNodeConfig;
  readonly peers: readonly HaNodeConfig[];
  /** IPv4 link-local multicast group (224.0.0.0/24) for the second copy; null: unicast only. */
  readonly group: string | null;
  readonly onDatagram: (msg: Buffer, size: number) => void;
  readonly log?: Logger;
}

export interface TransportStats {
  sent: number;
  sendErrors: number;
  /** Copies sent to the multicast group. */
  multicastSent: number;
}

/** The UDP side of the peer store. */
export class AdvertTransport {
  private readonly opts: TransportOptions;
  private readonly unicast: dgram.Socket;
  private multicast: dgram.Socket | null;
  /** The group actually joined; null when unicast only (none configured, loopback, IPv6). */
  private group: string | null;
  readonly stats: TransportStats;

  constructor(opts: TransportOptions) {
    this.opts = opts;
    this.unicast = dgram.createSocket({ type: isIP(opts.self.host) === 6 ? 'udp6' : 'udp4', reuseAddr: false });
    this.multicast = null;
    this.group = null;
    this.stats = { sent: 0, sendErrors: 0, multicastSent: 0 };
  }

  /** The multicast group in use, or null. */
  get multicastGroup(): string | null {
    return this.group;
  }

  /** Binds this node's HA address, and joins the group on its interface when one applies. */
  async start(): Promise<void> {
    const { self, group } = this.opts;
    await bind(this.unicast, self.host, self.port, true);
    this.unicast.on('message', (msg, rinfo) => this.opts.onDatagram(msg, rinfo.size));
    this.unicast.on('error', (err) => this.opts.log?.warn({ err: err.message }, `ha peer store: udp: ${err.message}`));
    // Multicast needs a real interface: not loopback (no multicast there, and nodes on one
    // host would hear each other twice), not IPv6 (a group per scope is a later step).
    if (group === null || isIP(self.host) !== 4 || self.host.startsWith('127.') || self.host === '0.0.0.0') return;
    const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    try {
      // Bound to the group, not to 0.0.0.0: it receives that group's datagrams only, and
      // never competes with the unicast socket for this node's own address.
      await bind(socket, group, self.port, false);
      socket.addMembership(group, self.host);
      // The copies leave from the unicast socket (their source is this node's address):
      // out of this node's interface, one hop, and not back to this host.
      this.unicast.setMulticastInterface(self.host);
      this.unicast.setMulticastTTL(1);
      this.unicast.setMulticastLoopback(false);
    } catch (err) {
      socket.close();
      this.opts.log?.warn({ group, host: self.host, err: (err as Error).message }, `ha peer store: cannot join multicast group ${group} on ${self.host} (${(err as Error).message}): adverts go by unicast only`);
      return;
    }
    socket.on('message', (msg, rinfo) => this.opts.onDatagram(msg, rinfo.size));
    socket.on('error', (err) => this.opts.log?.warn({ err: err.message }, `ha peer store: multicast: ${err.message}`));
    this.multicast = socket;
    this.group = group;
  }

  /**
   * Sends `datagram` to every peer and to the group. Resolves once a unicast copy left;
   * rejects when none did (no peers: resolves). The group copy never decides: a network
   * that drops multicast must not look like an unreachable peer.
   */
  send(datagram: Buffer): Promise<void> {
    const peers = this.opts.peers;
    if (peers.length === 0) return Promise.resolve();
    if (this.multicast !== null && this.group !== null) {
      // Sent from the unicast socket, so the source address is this node's own.
      this.unicast.send(datagram, this.opts.self.port, this.group, (err) => {
        if (err) this.stats.sendErrors++;
        else this.stats.multicastSent++;
      });
    }
    return new Promise<void>((resolve, reject) => {
      let pending = peers.length;
      let ok = 0;
      let lastError: Error | null = null;
      for (const peer of peers) {
        this.unicast.send(datagram, peer.port, peer.host, (err) => {
          if (err) {
            this.stats.sendErrors++;
            lastError = err;
          } else {
            this.stats.sent++;
            ok++;
          }
          if (--pending === 0) {
            if (ok > 0) resolve();
            else reject(new TandemError(errors.LEASE_STORE, `no peer reachable: ${lastError?.message}`, { cause: lastError }));
          }
        });
      }
    });
  }

  async close(): Promise<void> {
    const closing = [this.unicast, this.multicast].filter((s): s is dgram.Socket => s !== null);
    this.multicast = null;
    await Promise.all(closing.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

function bind(socket: dgram.Socket, address: string, port: number, exclusive: boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address, port, exclusive }, () => {
      socket.off('error', reject);
      resolve();
    });
  });
}
