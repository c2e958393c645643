// The memory store: the lease store contract on the in-process medium, then what the
// medium itself promises: records vanish when their TTL runs out on its clock, and
// create-if-absent and rewrite-if-unchanged hold against a concurrent writer.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryMedium, MemoryStore } from '../../src/ha/stores/memory/store.ts';
import { ManualClock } from './manual-clock.ts';
import { leaseStoreContract, type ClusterOptions, type StoreCluster } from './lease-store.contract.ts';

async function memoryCluster(opts: ClusterOptions): Promise<StoreCluster> {
  const medium = new MemoryMedium();
  const stores = new Map<string, MemoryStore>();
  for (const node of opts.nodes) {
    stores.set(node, new MemoryStore({ node, medium, leaseDuration: opts.leaseDuration, renewEvery: opts.renewEvery, handoverTimeout: 2 * opts.leaseDuration }));
  }
  return {
    store: (id) => stores.get(id)!,
    crash: async (id) => stores.get(id)!.abandon(),
    close: async () => {
      for (const s of stores.values()) s.close();
    },
  };
}

leaseStoreContract('memory', memoryCluster);

describe('memory medium', () => {
  test('a record vanishes when its TTL runs out on the clock, not before, and watchers hear of it', async () => {
    const clock = new ManualClock();
    const medium = new MemoryMedium(clock);
    const heard: string[] = [];
    medium.watch('vip/', (path) => heard.push(path));
    const rev = medium.create('vip/a', { holder: 'lb1' }, 500);
    assert.ok(rev > 0);
    await clock.advance(499);
    assert.notEqual(medium.get('vip/a'), null, 'alive 1 ms before its TTL');
    assert.ok(medium.keepAlive('vip/a', rev, 500), 'kept alive');
    await clock.advance(499);
    assert.notEqual(medium.get('vip/a'), null, 'the keep-alive counted from when it was made');
    await clock.advance(1);
    assert.equal(medium.get('vip/a'), null, 'gone once its TTL ran out');
    assert.deepEqual(heard, ['vip/a', 'vip/a']);
    assert.equal(medium.keepAlive('vip/a', rev, 500), false, 'a vanished record cannot be kept alive');
  });

  test('create only if absent, rewrite and delete only if unchanged', () => {
    const medium = new MemoryMedium(new ManualClock());
    const first = medium.create('vip/a', 1, 1000);
    assert.equal(medium.create('vip/a', 2, 1000), 0, 'a second create fails');
    const second = medium.replace('vip/a', first, 3, null);
    assert.ok(second > first);
    assert.equal(medium.replace('vip/a', first, 4, null), 0, 'a rewrite on a stale revision fails');
    assert.equal(medium.delete('vip/a', first), false, 'a delete on a stale revision fails');
    assert.equal(medium.get('vip/a')?.value, 3);
    assert.equal(medium.next('epoch/a'), 1);
    assert.ok(medium.delete('vip/a', second));
    assert.equal(medium.next('epoch/a'), 2, 'counters survive the records');
  });
});
