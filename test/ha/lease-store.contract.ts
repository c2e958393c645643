// The contract every lease store passes (memory, peer, etcd): run it with
// `leaseStoreContract(name, factory, traits)` from the store's own test file. Timings are
// short leases on loopback; the assertions are about order and bounds, never about speed.
// What differs between stores is declared in their traits, not skipped: etcd grants
// leases in whole seconds, ends an expired lease on its own revocation loop, and takes
// its epochs from revisions (which grow, but not by one).

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Lease, LeaseStore } from '../../src/ha/lease-store.ts';
import { Competitor, sleep, waitLease } from './support.ts';

export interface ClusterOptions {
  /** Node ids, in order. */
  readonly nodes: readonly string[];
  readonly leaseDuration: number;
  readonly renewEvery: number;
}

/** A set of stores, one per node, that see each other. */
export interface StoreCluster {
  store(node: string): LeaseStore;
  /** Ends a node abruptly, as a crash of its process would: no release, nothing more sent. */
  crash(node: string): Promise<void>;
  close(): Promise<void>;
}

export type ClusterFactory = (opts: ClusterOptions) => Promise<StoreCluster>;

/** What a store makes of the contract's timing and epochs. */
export interface StoreTraits {
  /** The lease the store grants when asked for 600 ms (etcd: whole seconds). */
  readonly lease: number;
  /** How long after a lease ran out the store may still show it (etcd revokes expired leases on a 500 ms loop). */
  readonly expiryLag: number;
  /** Epochs grow by exactly one per change of holder (peer), or grow by any step (etcd revisions). */
  readonly consecutiveEpochs: boolean;
}

const ASKED = 600;
const RENEW = 100;
const PEER_TRAITS: StoreTraits = { lease: ASKED, expiryLag: 2 * RENEW, consecutiveEpochs: true };
let keyCounter = 0;
const newKey = () => `vip-${process.pid}-${++keyCounter}`;

/** Registers the shared lease store tests for one implementation. */
export function leaseStoreContract(name: string, factory: ClusterFactory, traits: StoreTraits = PEER_TRAITS, options: { skip?: string | false } = {}): void {
  const LEASE = traits.lease;
  /** The epoch after `epoch` at the next change of holder: exactly +1, or anything larger. */
  const assertNext = (next: number, epoch: number, what = 'epoch') => {
    if (traits.consecutiveEpochs) assert.equal(next, epoch + 1, what);
    else assert.ok(next > epoch, `${what}: ${next} after ${epoch}`);
  };
  describe(`lease store contract: ${name}`, { skip: options.skip ?? false }, () => {
    const clusters: StoreCluster[] = [];
    const competitors: Competitor[] = [];
    after(async () => {
      for (const c of competitors) c.halt();
      await Promise.all(clusters.map((c) => c.close()));
    });
    const cluster = async (nodes: string[]) => {
      const c = await factory({ nodes, leaseDuration: ASKED, renewEvery: RENEW });
      clusters.push(c);
      return c;
    };
    const compete = (c: StoreCluster, node: string, key: string, priority: number, opts: { preempt?: boolean; confirmDelay?: number } = {}) => {
      const comp = new Competitor(c.store(node), node, key, { priority, renewEvery: RENEW, ...opts });
      competitors.push(comp);
      return comp;
    };

    test('a free key goes to its only competitor at epoch 1, and the other nodes see it', async () => {
      const c = await cluster(['lb1', 'lb2']);
      const key = newKey();
      const seen = waitLease(c.store('lb2'), key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE, 'lb2 to see lb1 serving');
      compete(c, 'lb1', key, 100);
      const lease = await seen;
      if (traits.consecutiveEpochs) assert.equal(lease.epoch, 1);
      else assert.ok(lease.epoch > 0, `epoch ${lease.epoch}`);
      assert.equal(lease.priority, 100);
      assert.ok(lease.remaining > 0 && lease.remaining <= LEASE, `remaining ${lease.remaining}`);
      assert.equal(lease.offeredTo, null);
    });

    test('renewing keeps the lease: a renewed lease has a full duration left and the same epoch', async () => {
      const c = await cluster(['lb1', 'lb2']);
      const key = newKey();
      const s = c.store('lb1');
      const comp = compete(c, 'lb1', key, 100);
      const first = await waitLease(s, key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE);
      comp.halt();
      await sleep(2 * LEASE + traits.expiryLag);
      // Halting stopped renewals, so the lease ran out; a fresh renew must not revive it.
      const lost = await s.renew(key, 'lb1');
      assert.notEqual(lost.holder, 'lb1');
      const comp2 = compete(c, 'lb1', key, 100);
      const again = await waitLease(s, key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE);
      assertNext(again.epoch, first.epoch);
      await sleep(3 * LEASE);
      const renewed = await s.renew(key, 'lb1');
      assert.equal(renewed.holder, 'lb1');
      assert.equal(renewed.epoch, again.epoch);
      assert.ok(renewed.remaining >= LEASE - 50, `remaining ${renewed.remaining}`);
      comp2.halt();
    });

    test('a second competitor does not take a lease that is held and renewed', async () => {
      const c = await cluster(['lb1', 'lb2']);
      const key = newKey();
      compete(c, 'lb1', key, 100);
      await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE);
      const other = compete(c, 'lb2', key, 200);
      await sleep(3 * LEASE);
      assert.ok(other.views.every((l) => l.holder !== 'lb2'), 'lb2 never held it');
      const lease = await c.store('lb2').acquire(key, { node: 'lb2', priority: 200, preempt: false });
      assert.equal(lease.holder, 'lb1');
    });

    test('of several competitors for a free key the highest priority takes it, and ties go to the smaller node id', async () => {
      const c = await cluster(['lb1', 'lb2', 'lb3']);
      const key = newKey();
      compete(c, 'lb1', key, 100);
      compete(c, 'lb2', key, 150);
      compete(c, 'lb3', key, 120);
      const l = await waitLease(c.store('lb1'), key, (x) => x.holder !== null && x.serving, 4 * LEASE);
      assert.equal(l.holder, 'lb2');
      if (traits.consecutiveEpochs) assert.equal(l.epoch, 1);
      const tie = newKey();
      compete(c, 'lb3', tie, 100);
      compete(c, 'lb2', tie, 100);
      const t = await waitLease(c.store('lb3'), tie, (x) => x.holder !== null && x.serving, 4 * LEASE);
      assert.equal(t.holder, 'lb2');
    });

    test('a released lease is free for the others at once, and the next holder has epoch + 1', async () => {
      const c = await cluster(['lb1', 'lb2']);
      const key = newKey();
      const a = compete(c, 'lb1', key, 100);
      const held = await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE);
      // lb2 watches but does not compete, so release has no heir and frees the key.
      a.halt();
      const freed = waitLease(c.store('lb2'), key, (l) => l.holder === null, LEASE);
      const t0 = performance.now();
      await c.store('lb1').release(key, 'lb1');
      await freed;
      assert.ok(performance.now() - t0 < LEASE / 2, `freed after ${Math.round(performance.now() - t0)} ms`);
      compete(c, 'lb2', key, 100);
      const next = await waitLease(c.store('lb1'), key, (l) => l.holder === 'lb2' && l.serving, 3 * LEASE);
      assertNext(next.epoch, held.epoch);
    });

    test('a lease that is no longer renewed expires within its duration, and a competitor takes it with epoch + 1', async () => {
      const c = await cluster(['lb1', 'lb2']);
      const key = newKey();
      const a = compete(c, 'lb1', key, 200);
      const held = await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE);
      compete(c, 'lb2', key, 100);
      await sleep(2 * RENEW);
      a.halt();
      const t0 = performance.now();
      const next = await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb2', 3 * LEASE);
      const took = performance.now() - t0;
      assertNext(next.epoch, held.epoch);
      assert.ok(took <= LEASE + traits.expiryLag, `took over after ${Math.round(took)} ms`);
    });

    test('release hands the lease to a ready candidate and returns only once the new holder serves', async () => {
      const c = await cluster(['lb1', 'lb2']);
      const key = newKey();
      const a = compete(c, 'lb1', key, 200);
      const held = await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE);
      const b = compete(c, 'lb2', key, 100, { confirmDelay: 150 });
      await sleep(3 * RENEW);
      a.halt();
      const t0 = performance.now();
      await c.store('lb1').release(key, 'lb1');
      const releasedAt = performance.now();
      // Not by waiting for the offer to time out (the factories give it two leases).
      assert.ok(releasedAt - t0 < LEASE, `release took ${Math.round(releasedAt - t0)} ms`);
      const view = await waitLease(c.store('lb1'), key, (l) => l.holder === 'lb2' && l.serving, LEASE);
      assertNext(view.epoch, held.epoch);
      // The moment lb2's stand-in for its MASTER hook finished and it asked to confirm:
      // the old holder may let go only after that (make-before-break).
      const ready = b.readyAt.get(view.epoch);
      assert.ok(ready !== undefined, 'lb2 asked to confirm the lease');
      // lb1's view can show the confirmation before lb2's own call returns with it (a busy
      // machine reads etcd's watch event first): wait for that answer, bounded.
      for (const until = performance.now() + LEASE; !b.confirmedAt.has(view.epoch) && performance.now() < until;) await sleep(10);
      assert.ok(b.confirmedAt.has(view.epoch), 'lb2 confirmed the lease');
      assert.ok(ready <= releasedAt, 'release returned after the new holder served (make-before-break)');
      assert.ok(b.views.some((l) => l.offeredTo === 'lb2'), 'lb2 saw the offer');
    });

    test('a higher-priority competitor with preempt gets a live lease by handover, and without preempt it does not', async () => {
      const c = await cluster(['lb1', 'lb2']);
      const key = newKey();
      compete(c, 'lb2', key, 100);
      const held = await waitLease(c.store('lb1'), key, (l) => l.holder === 'lb2' && l.serving, 3 * LEASE);
      const a = compete(c, 'lb1', key, 200, { preempt: false });
      await sleep(3 * LEASE);
      assert.equal((await c.store('lb1').acquire(key, { node: 'lb1', priority: 200, preempt: false })).holder, 'lb2');
      a.preempt = true;
      const taken = await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE);
      assertNext(taken.epoch, held.epoch);
    });

    test('the lease of a crashed holder goes to another node within the lease duration, with epoch + 1', async () => {
      const c = await cluster(['lb1', 'lb2']);
      const key = newKey();
      compete(c, 'lb1', key, 200);
      const held = await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE);
      compete(c, 'lb2', key, 100);
      await sleep(2 * RENEW);
      const t0 = performance.now();
      await c.crash('lb1');
      const next = await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb2' && l.serving, 3 * LEASE);
      assertNext(next.epoch, held.epoch);
      assert.ok(performance.now() - t0 <= LEASE + traits.expiryLag, `took ${Math.round(performance.now() - t0)} ms`);
    });

    test(`epochs grow${traits.consecutiveEpochs ? ' by exactly one' : ''} with every change of holder and never go back`, async () => {
      const c = await cluster(['lb1', 'lb2']);
      const key = newKey();
      const views: Lease[] = [];
      c.store('lb2').watch(key, (l) => views.push(l));
      const a = compete(c, 'lb1', key, 200);
      const b = compete(c, 'lb2', key, 100);
      await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE);
      for (let round = 0; round < 3; round++) {
        const holder = round % 2 === 0 ? 'lb1' : 'lb2';
        const next = holder === 'lb1' ? 'lb2' : 'lb1';
        (holder === 'lb1' ? a : b).priority = 50;
        (next === 'lb1' ? a : b).priority = 200;
        await c.store(holder).release(key, holder);
        await waitLease(c.store('lb2'), key, (l) => l.holder === next && l.serving, 3 * LEASE, `${next} to hold`);
      }
      const epochs = views.filter((l) => l.holder !== null).map((l) => l.epoch);
      for (let i = 1; i < epochs.length; i++) assert.ok(epochs[i] >= epochs[i - 1], `epochs never go back: ${epochs.join(',')}`);
      const holders = views.filter((l) => l.holder !== null);
      for (let i = 1; i < holders.length; i++) {
        if (holders[i].holder !== holders[i - 1].holder) assertNext(holders[i].epoch, holders[i - 1].epoch, `holder change moves the epoch: ${epochs.join(',')}`);
      }
      // Four holdings (lb1, lb2, lb1, lb2), one epoch each.
      assert.equal(new Set(epochs).size, 4, `epochs ${epochs.join(',')}`);
      if (traits.consecutiveEpochs) assert.equal(epochs.at(-1), 4);
    });

    test('a node that withdraws its candidacy is no longer waited for', async () => {
      const c = await cluster(['lb1', 'lb2']);
      const key = newKey();
      const a = compete(c, 'lb1', key, 200);
      await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb1' && l.serving, 3 * LEASE);
      a.halt();
      await c.store('lb1').release(key, 'lb1');
      // lb1 (better) released and withdrew; lb2 must take the key without waiting for it.
      const t0 = performance.now();
      compete(c, 'lb2', key, 100);
      await waitLease(c.store('lb2'), key, (l) => l.holder === 'lb2' && l.serving, 3 * LEASE);
      assert.ok(performance.now() - t0 < LEASE, `took ${Math.round(performance.now() - t0)} ms`);
    });
  });
}
