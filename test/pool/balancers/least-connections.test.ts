import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { EXACT_SCAN_LIMIT, LeastConnections } from '../../../src/pool/balancers/least-connections.ts';
import type { Backend } from '../../../src/pool/backend.ts';
import { balancerContract } from './contract.ts';
import { Harness } from './fixtures.ts';

const factory = (backends: readonly Backend[]) => new LeastConnections(backends);

balancerContract('least-connections', factory);

describe('least-connections', () => {
  const harnesses: Harness[] = [];
  const make = (weights: readonly number[]): Harness => {
    const h = new Harness(factory, weights);
    harnesses.push(h);
    return h;
  };
  after(() => Promise.all(harnesses.map((h) => h.close())));

  test('sends to the backend with the fewest requests in flight', () => {
    const h = make([1, 1, 1]);
    h.get('a').active = 4;
    h.get('b').active = 1;
    h.get('c').active = 3;
    assert.deepEqual(h.sequence(3), ['b', 'b', 'b']);
  });

  test('compares requests in flight relative to weight', () => {
    const h = make([2, 1]);
    h.get('a').active = 3; // 1.5 per unit of weight
    h.get('b').active = 2; // 2
    assert.equal(h.balancer.pick()?.name, 'a');
    h.get('a').active = 5; // 2.5
    assert.equal(h.balancer.pick()?.name, 'b');
  });

  test('shares evenly among equally loaded backends, in turn', () => {
    const h = make([1, 1, 1, 1]);
    for (const b of h.backends) b.active = 2;
    assert.deepEqual(h.sequence(8), ['a', 'b', 'c', 'd', 'a', 'b', 'c', 'd']);
  });

  test('shares ties among the tied backends only', () => {
    const h = make([1, 1, 1, 1]);
    h.get('b').active = 1;
    assert.deepEqual(h.sequence(6), ['a', 'c', 'd', 'a', 'c', 'd']);
  });

  test('with nothing in flight, follows the smooth weighted order a,a,b,a,c,a,a', () => {
    const h = make([5, 1, 1]);
    assert.deepEqual(h.sequence(14), ['a', 'a', 'b', 'a', 'c', 'a', 'a', 'a', 'a', 'b', 'a', 'c', 'a', 'a']);
  });

  test('keeps a slow backend from piling up requests', () => {
    // Requests to a never finish; b and c answer at once.
    const h = make([1, 1, 1]);
    const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
    for (let i = 0; i < 300; i++) {
      const b = h.balancer.pick()!;
      counts[b.name]++;
      if (b.name === 'a') b.active++;
    }
    assert.equal(counts.a, 1);
    assert.equal(counts.b + counts.c, 299);
  });

  describe(`in a pool of more than ${EXACT_SCAN_LIMIT} backends (sampled choice)`, () => {
    test('splits exactly by weight over a cycle when all backends carry the same load', () => {
      const weights = Array.from({ length: 40 }, (_, i) => 1 + (i % 4));
      const h = make(weights);
      for (const b of h.backends) b.active = 3 * b.effectiveWeight;
      const counts = h.counts(weights.reduce((s, w) => s + w, 0) * 5);
      h.backends.forEach((b, i) => assert.equal(counts[b.name], weights[i] * 5, b.name));
    });

    test('sends almost nothing to a backend that piles up requests', () => {
      const h = make(Array.from({ length: 100 }, () => 1));
      const slow = h.backends[17];
      let slowPicks = 0;
      for (let i = 0; i < 10_000; i++) {
        const b = h.balancer.pick()!;
        if (b === slow) {
          slowPicks++;
          b.active++;
        }
      }
      // Round-robin alone would give it 100. Each turn it gets, a random challenger
      // must lose first, and every request it keeps makes that less likely.
      assert.ok(slowPicks <= 12, `slow backend got ${slowPicks}`);
    });

    test('moves load from busy backends to idle ones', () => {
      const h = make(Array.from({ length: 64 }, () => 1));
      for (let i = 0; i < 32; i++) h.backends[i].active = 10;
      let busyPicks = 0;
      for (let i = 0; i < 6400; i++) if (h.backends.indexOf(h.balancer.pick()!) < 32) busyPicks++;
      // Half the backends are busy; round-robin would send them 3200.
      assert.ok(busyPicks < 3200 * 0.6, `busy half got ${busyPicks}`);
    });
  });
});
