// The behaviour every balancer promises (src/pool/balancer.ts). Each implementation's
// test file calls balancerContract with its factory; the tests assert the actual split
// of picks, not how the balancer got there.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { BalancerFactory } from '../../../src/pool/balancer.ts';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Harness } from './fixtures.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Registers the shared balancer tests for `factory` under `name`. */
export function balancerContract(name: string, factory: BalancerFactory): void {
  describe(`${name} (balancer contract)`, () => {
    const harnesses: Harness[] = [];
    const make = (weights: readonly number[]): Harness => {
      const h = new Harness(factory, weights);
      harnesses.push(h);
      return h;
    };
    after(() => Promise.all(harnesses.map((h) => h.close())));

    test('never picks a backend that is down, ejected, draining or disabled', () => {
      const h = make([5, 1, 1, 3]);
      h.get('a').setHealthy(false, 'test');
      h.get('b').setEjected(true, 'test');
      h.get('c').setAdmin('draining', 'test');
      const counts = h.counts(100);
      assert.deepEqual(counts, { a: 0, b: 0, c: 0, d: 100 });
      h.get('c').setAdmin('enabled', 'test');
      h.get('d').setAdmin('disabled', 'test');
      assert.deepEqual(h.counts(100), { a: 0, b: 0, c: 100, d: 0 });
    });

    test('never picks a backend that went down before the balancer was rebuilt', () => {
      const h = make([5, 1, 1]);
      h.sequence(3);
      // Flip the fields directly: no onChange, so no rebuild.
      h.get('a').healthy = false;
      const counts = h.counts(70);
      assert.equal(counts.a, 0);
      assert.equal(counts['-'], undefined);
      assert.equal(counts.b + counts.c, 70);
      h.get('b').healthy = false;
      h.get('c').ejected = true;
      assert.deepEqual(h.counts(10), { a: 0, b: 0, c: 0, '-': 10 });
    });

    test('never picks an unavailable backend in a pool of a hundred', () => {
      const weights = Array.from({ length: 100 }, (_, i) => 1 + (i % 7));
      const h = make(weights);
      const down = new Set(h.backends.filter((_, i) => i % 3 === 0));
      for (const b of down) b.setHealthy(false, 'test');
      // One more goes down without a rebuild.
      h.backends[1].ejected = true;
      for (let i = 0; i < 5000; i++) {
        const b = h.balancer.pick();
        assert.ok(b !== null && b.isAvailable(), `pick ${i} gave ${b?.name}`);
      }
    });

    test('returns null when no backend is available, and picks again once one is', () => {
      const h = make([2, 1]);
      h.get('a').setHealthy(false, 'test');
      h.get('b').setHealthy(false, 'test');
      assert.deepEqual(h.sequence(3), ['-', '-', '-']);
      h.get('b').setHealthy(true, 'test');
      assert.deepEqual(h.sequence(3), ['b', 'b', 'b']);
    });

    test('returns null for a pool with no backends', () => {
      const h = make([]);
      assert.equal(h.balancer.pick(), null);
      h.balancer.rebuild();
      assert.equal(h.balancer.pick(), null);
    });

    test('gives every available backend traffic within one weighted cycle', () => {
      const weights = [100, 1, 1, 50, 7, 1];
      const h = make(weights);
      const counts = h.counts(weights.reduce((s, w) => s + w, 0));
      for (const b of h.backends) assert.ok(counts[b.name] > 0, `${b.name} got nothing: ${JSON.stringify(counts)}`);
    });

    test('gives every backend of a big pool traffic within one weighted cycle', () => {
      const weights = Array.from({ length: 300 }, (_, i) => 1 + (i % 10));
      const h = make(weights);
      const counts = h.counts(weights.reduce((s, w) => s + w, 0));
      for (const b of h.backends) assert.ok(counts[b.name] > 0, `${b.name} got nothing`);
    });

    test('gives a backend of weight 0 nothing', () => {
      const h = make([0, 3, 1]);
      assert.deepEqual(h.counts(400), { a: 0, b: 300, c: 100 });
      h.get('b').setEffectiveWeight(0, 'test');
      assert.deepEqual(h.counts(40), { a: 0, b: 0, c: 40 });
    });

    test('splits requests exactly by weight over whole cycles when nothing stays in flight', () => {
      assert.deepEqual(make([5, 1, 1]).counts(700), { a: 500, b: 100, c: 100 });
      assert.deepEqual(make([3, 2, 1]).counts(600), { a: 300, b: 200, c: 100 });
      assert.deepEqual(make([10, 20, 30, 40]).counts(1000), { a: 100, b: 200, c: 300, d: 400 });
      assert.deepEqual(make([1, 1, 1, 1]).counts(400), { a: 100, b: 100, c: 100, d: 100 });
    });

    test('splits each burst of concurrent requests by weight when all backends are equally fast', () => {
      const h = make([5, 1, 1]);
      for (let round = 0; round < 20; round++) assert.deepEqual(h.burst(7), { a: 5, b: 1, c: 1 });
      const h2 = make([3, 2, 1, 2]);
      for (let round = 0; round < 20; round++) assert.deepEqual(h2.burst(8), { a: 3, b: 2, c: 1, d: 2 });
    });

    test('applies an availability change from the very next pick', () => {
      const h = make([5, 1, 1]);
      assert.deepEqual(h.counts(700), { a: 500, b: 100, c: 100 });
      h.get('b').setHealthy(false, 'test');
      assert.deepEqual(h.counts(600), { a: 500, b: 0, c: 100 });
      h.get('a').setEjected(true, 'test');
      assert.deepEqual(h.sequence(3), ['c', 'c', 'c']);
      h.get('a').setEjected(false, 'test');
      h.get('b').setHealthy(true, 'test');
      assert.deepEqual(h.counts(700), { a: 500, b: 100, c: 100 });
    });

    test('follows a change of effective weight', () => {
      const h = make([1, 1]);
      assert.deepEqual(h.counts(100), { a: 50, b: 50 });
      h.get('a').setEffectiveWeight(3, 'slow start done');
      assert.deepEqual(h.counts(400), { a: 300, b: 100 });
    });

    test('allocates nothing per pick, with 3 backends as with 1000', () => {
      // Heap growth between a forced collection and the end of 20,000 picks: an object
      // per pick would be at least 16 bytes each, and this few stay in the young
      // generation, so no collection can hide them. Not a timing: bytes only.
      for (const n of [3, 1000]) {
        const h = make(Array.from({ length: n }, (_, i) => 1 + (i % 4)));
        h.backends.forEach((b, i) => { b.active = i % 5; });
        const picks = (count: number): unknown => {
          let last = null;
          for (let i = 0; i < count; i++) last = h.balancer.pick();
          return last;
        };
        for (let i = 0; i < 5; i++) picks(50_000);
        // The least of three runs: V8 may install optimized code during any one of them,
        // which is heap too, while an allocating pick grows the heap in every run.
        let grown = Infinity;
        for (let run = 0; run < 3; run++) {
          gc();
          const before = process.memoryUsage().heapUsed;
          const last = picks(20_000);
          grown = Math.min(grown, process.memoryUsage().heapUsed - before);
          assert.notEqual(last, null);
        }
        assert.ok(grown < 20_000, `${n} backends: the heap grew ${grown} bytes over 20,000 picks`);
      }
    });
  });
}
