import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { SmoothWeightedRoundRobin } from '../../../src/pool/balancers/smooth-weighted-round-robin.ts';
import { smoothOrder } from '../../../src/pool/balancers/smooth-schedule.ts';
import type { Backend } from '../../../src/pool/backend.ts';
import { balancerContract } from './contract.ts';
import { Harness } from './fixtures.ts';

const factory = (backends: readonly Backend[]) => new SmoothWeightedRoundRobin(backends);

balancerContract('smooth weighted round-robin', factory);

describe('smooth weighted round-robin', () => {
  const harnesses: Harness[] = [];
  const make = (weights: readonly number[]): Harness => {
    const h = new Harness(factory, weights);
    harnesses.push(h);
    return h;
  };
  after(() => Promise.all(harnesses.map((h) => h.close())));

  test('splits 700 picks over weights 5:1:1 into exactly 500/100/100, in the order a,a,b,a,c,a,a', () => {
    const h = make([5, 1, 1]);
    const seq = h.sequence(700);
    const cycle = ['a', 'a', 'b', 'a', 'c', 'a', 'a'];
    for (let i = 0; i < seq.length; i++) assert.equal(seq[i], cycle[i % 7], `pick ${i}`);
    const counts = { a: 0, b: 0, c: 0 } as Record<string, number>;
    for (const name of seq) counts[name]++;
    assert.deepEqual(counts, { a: 500, b: 100, c: 100 });
  });

  test('produces the same order as nginx for other weights', () => {
    // Computed by hand with nginx's rule: add weights, take the largest, subtract the total.
    assert.deepEqual(Array.from(smoothOrder([4, 2, 1])), [0, 1, 0, 2, 0, 1, 0]);
    assert.deepEqual(Array.from(smoothOrder([1, 1, 1])), [0, 1, 2]);
    assert.deepEqual(Array.from(smoothOrder([2, 1])), [0, 1, 0]);
    assert.deepEqual(Array.from(smoothOrder([10, 5, 5])), [0, 1, 2, 0]);
  });

  test('keeps every backend within about one pick of its share at every point of the cycle, in small and big pools', () => {
    const cases = [
      [5, 1, 1],
      Array.from({ length: 40 }, (_, i) => 1 + (i % 9)),
      Array.from({ length: 200 }, (_, i) => 1 + (i % 13)),
      // One heavy backend and many light ones: the light ones must not come in a burst.
      [1000, ...Array.from({ length: 99 }, () => 1)],
    ];
    for (const weights of cases) {
      const h = make(weights);
      const total = weights.reduce((s, w) => s + w, 0);
      const got = new Map(h.backends.map((b) => [b, 0]));
      let worst = 0;
      for (let p = 1; p <= total; p++) {
        const b = h.balancer.pick()!;
        got.set(b, got.get(b)! + 1);
        h.backends.forEach((x, i) => { worst = Math.max(worst, Math.abs(got.get(x)! - (p * weights[i]) / total)); });
      }
      assert.ok(worst < 1.5, `${weights.length} backends: a backend strayed ${worst.toFixed(2)} picks from its share`);
    }
  });

  test('never sends two requests in a row to a backend whose weight is at most half the total', () => {
    const h = make([3, 3, 2]);
    const seq = h.sequence(800);
    for (let i = 1; i < seq.length; i++) assert.notEqual(seq[i], seq[i - 1], `picks ${i - 1} and ${i}`);
  });

  test('keeps the exact split when rebuilt every few picks', () => {
    const h = make([5, 1, 1]);
    const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
    for (let i = 0; i < 700; i++) {
      // Restarting at the top of the cycle here would give a,a,b forever and c nothing.
      if (i % 3 === 0) h.balancer.rebuild();
      counts[h.balancer.pick()!.name]++;
    }
    assert.deepEqual(counts, { a: 500, b: 100, c: 100 });
  });

  test('gives a backend in slow start its share while its weight ramps up between few picks', () => {
    // a is at full weight 100; b ramps up in steps, with a few picks per step, as a slow
    // start that rebuilds more often than traffic arrives would. Restarting the cycle at
    // each rebuild gets 80 of 92.8 in the second case, and none of 3.3 in the last.
    for (const [from, step, picksPerStep] of [[10, 5, 4], [1, 1, 3], [50, 1, 2], [10, 10, 1]]) {
      const h = make([100, from]);
      const b = h.get('b');
      let share = 0;
      let got = 0;
      for (let weight = from; weight <= 100; weight += step) {
        b.setEffectiveWeight(weight, 'slow start');
        for (let i = 0; i < picksPerStep; i++) {
          share += weight / (100 + weight);
          if (h.balancer.pick() === b) got++;
        }
      }
      assert.ok(Math.abs(got - share) <= 1, `ramp from ${from} by ${step}: b got ${got}, share ${share.toFixed(1)}`);
    }
  });

  test('stays within a few requests of every backend\'s share through thousands of random rebuilds', () => {
    let seed = 12345;
    const random = (): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 2 ** 32;
    };
    // 80 backends take the deadline layout instead of nginx's. The bound grows a little
    // with the pool (one cycle position has to match more deficits at once) but not
    // with time; restarting the cycle at each rebuild drifts to ~90 (10) and ~600 (80) here.
    for (const [n, rounds, bound] of [[3, 3000, 2], [10, 3000, 2], [80, 800, 3]]) {
      const h = make(Array.from({ length: n }, () => 10));
      const share = new Map(h.backends.map((b) => [b, 0]));
      const got = new Map(h.backends.map((b) => [b, 0]));
      let worst = 0;
      for (let round = 0; round < rounds; round++) {
        const b = h.backends[Math.floor(random() * n)];
        if (random() < 0.1 && b.healthy) b.setHealthy(false, 'test');
        else if (!b.healthy) b.setHealthy(true, 'test');
        else b.setEffectiveWeight(1 + Math.floor(random() * 100), 'test');
        const picks = Math.floor(random() * 6);
        for (let i = 0; i < picks; i++) {
          let total = 0;
          for (const x of h.backends) if (x.isAvailable()) total += x.effectiveWeight;
          for (const x of h.backends) if (x.isAvailable()) share.set(x, share.get(x)! + x.effectiveWeight / total);
          const p = h.balancer.pick()!;
          got.set(p, got.get(p)! + 1);
        }
        for (const x of h.backends) worst = Math.max(worst, Math.abs(got.get(x)! - share.get(x)!));
      }
      assert.ok(worst <= bound, `${n} backends: worst deviation ${worst.toFixed(2)}`);
    }
  });

  test('places a rebuild with unchanged weights exactly where the cycle was', () => {
    const h = make([5, 1, 1]);
    const expected = ['a', 'a', 'b', 'a', 'c', 'a', 'a'];
    const seq: string[] = [];
    for (let i = 0; i < 70; i++) {
      h.balancer.rebuild();
      h.balancer.rebuild();
      seq.push(h.balancer.pick()!.name);
    }
    seq.forEach((name, i) => assert.equal(name, expected[i % 7], `pick ${i}`));
  });

  test('keeps weight ratios when weights are too large to lay out in full', () => {
    const h = make([1_000_000, 3_000_000, 1]);
    const counts = h.counts(40_000);
    assert.ok(Math.abs(counts.b / counts.a - 3) < 0.01, JSON.stringify(counts));
    assert.ok(counts.c >= 1 && counts.c <= 2, JSON.stringify(counts));
  });

  test('follows fractional effective weights', () => {
    const h = make([1, 1]);
    h.get('a').setEffectiveWeight(0.5, 'slow start');
    h.get('b').setEffectiveWeight(1.5, 'slow start');
    assert.deepEqual(h.counts(400), { a: 100, b: 300 });
  });

  test('sends to each of 1000 equal backends exactly once per 1000 picks', () => {
    const h = make(Array.from({ length: 1000 }, () => 1));
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) seen.add(h.balancer.pick()!.name);
    assert.equal(seen.size, 1000);
  });

  test('splits a thousand backends of mixed weights exactly over one cycle', () => {
    const weights = Array.from({ length: 1000 }, (_, i) => 1 + (i % 4));
    const h = make(weights);
    const counts = h.counts(2500);
    h.backends.forEach((b, i) => assert.equal(counts[b.name], weights[i], b.name));
  });
});
