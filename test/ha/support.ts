// Small helpers shared by the HA tests: free ports for the peer store, waiting on a
// lease view, and a minimal competitor loop that drives a store the way an elector does.

import dgram from 'node:dgram';
import net from 'node:net';
import type { Lease, LeaseStore } from '../../src/ha/lease-store.ts';

/** A TCP server and a UDP socket bound to one port on `host`, both held open. */
export async function heldPort(host = '127.0.0.1'): Promise<{ port: number; tcp: net.Server; udp: dgram.Socket }> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const tcp = net.createServer();
    const port = await new Promise<number>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(0, host, () => resolve((tcp.address() as net.AddressInfo).port));
    });
    const udp = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, host, () => resolve(true));
    });
    if (ok) return { port, tcp, udp };
    udp.close();
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }
  throw new Error('no free port');
}

/**
 * A port free for both TCP and UDP on `host` (the peer store binds both) when this
 * returns; another process may take it before it is bound again (heldPort() keeps it).
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const { port, tcp, udp } = await heldPort(host);
  await new Promise<void>((resolve) => tcp.close(() => resolve()));
  await new Promise<void>((resolve) => udp.close(() => resolve()));
  return port;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves with the first view of `key` that satisfies `test`; rejects after `ms`. */
export function waitLease(store: LeaseStore, key: string, test: (l: Lease) => boolean, ms: number, what = 'lease'): Promise<Lease> {
  return new Promise((resolve, reject) => {
    let stop: () => void = () => {};
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    stop = store.watch(key, (l) => {
      if (!test(l)) return;
      clearTimeout(timer);
      stop();
      resolve(l);
    });
  });
}

/**
 * Drives one node's store as an elector would, without hooks: competes every tick,
 * renews while holding (first after `confirmDelay`, standing in for the MASTER hook),
 * takes offers and preempts when asked to.
 */
export class Competitor {
  readonly store: LeaseStore;
  readonly node: string;
  readonly key: string;
  priority: number;
  preempt: boolean;
  confirmDelay: number;
  /** Every view the watch delivered, in order. */
  readonly views: Lease[];
  /** Performance-clock time of the first renew that confirmed each epoch we held. */
  readonly confirmedAt: Map<number, number>;
  /** Performance-clock time each epoch's stand-in MASTER hook finished (the confirming renew was then sent). */
  readonly readyAt: Map<number, number>;
  private timer: NodeJS.Timeout | null;
  private unwatch: () => void;
  private busy: boolean;
  private holding: number;

  constructor(store: LeaseStore, node: string, key: string, opts: { priority: number; preempt?: boolean; confirmDelay?: number; renewEvery: number }) {
    this.store = store;
    this.node = node;
    this.key = key;
    this.priority = opts.priority;
    this.preempt = opts.preempt ?? false;
    this.confirmDelay = opts.confirmDelay ?? 0;
    this.views = [];
    this.confirmedAt = new Map();
    this.readyAt = new Map();
    this.busy = false;
    this.holding = 0;
    this.unwatch = store.watch(key, (l) => {
      this.views.push(l);
      if (l.offeredTo === node || l.holder === null) void this.step();
    });
    this.timer = setInterval(() => void this.step(), opts.renewEvery);
  }

  /** Stops competing (renewals too); the lease then runs out unless released. */
  halt(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.unwatch();
  }

  private async step(): Promise<void> {
    if (this.busy || this.timer === null) return;
    this.busy = true;
    try {
      const claim = { node: this.node, priority: this.priority, preempt: this.preempt };
      let lease = await this.store.acquire(this.key, claim);
      if (lease.holder === this.node) {
        if (this.holding !== lease.epoch) {
          this.holding = lease.epoch;
          if (this.confirmDelay > 0) await sleep(this.confirmDelay);
          this.readyAt.set(lease.epoch, performance.now());
          lease = await this.store.renew(this.key, this.node);
          if (lease.holder === this.node && !this.confirmedAt.has(lease.epoch)) this.confirmedAt.set(lease.epoch, performance.now());
        } else {
          await this.store.renew(this.key, this.node);
        }
      }
    } catch {
      // A failed call is retried on the next tick.
    } finally {
      this.busy = false;
    }
  }
}
