import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventBus } from '../../src/events.ts';
import { startPoolHealth } from '../../src/pool/health/index.ts';
import { Pool } from '../../src/pool/pool.ts';
import { SlowStart, weightAt } from '../../src/pool/slow-start.ts';
import type { Backend } from '../../src/pool/backend.ts';
import { poolConfig, startBackends, stopAll } from '../helpers/backends.ts';
import { healthCheck, sleep, until } from './health/fixtures.ts';

/** How many of `n` picks go to each backend. */
function shares(pool: Pool, n: number): Map<string, number> {
  const seen = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const b = pool.pick();
    if (b !== null) seen.set(b.name, (seen.get(b.name) ?? 0) + 1);
  }
  return seen;
}

test('the ramp goes from a tenth of the weight, at least 1, to the full weight', () => {
  assert.equal(weightAt(100, 0), 10);
  assert.equal(weightAt(100, 0.5), 55);
  assert.equal(weightAt(100, 1), 100);
  assert.equal(weightAt(3, 0), 1);
  assert.equal(weightAt(1, 0.5), 1);
});

test('a restarted backend gets a small share at first and its full share after slowStart', async (t) => {
  const servers = await startBackends(2, 'web');
  const bus = new EventBus();
  const pool = new Pool(
    poolConfig('web', servers.map((s) => s.config({ weight: 20 })), {
      slowStart: 1000,
      healthCheck: healthCheck({ interval: 30, timeout: 200, rise: 1, fall: 1 }),
    }),
    bus,
  );
  const health = startPoolHealth(pool);
  t.after(async () => {
    await health.stop();
    await pool.close();
    await stopAll(servers);
  });
  const web1 = pool.byName.get('web1')!;
  assert.equal(web1.effectiveWeight, 20, 'no ramp at process start');

  await servers[0].stop();
  await until(() => !web1.healthy, 1000, 'down');
  await servers[0].restart();
  await until(() => web1.healthy, 1000, 'up');
  const upAt = performance.now();
  assert.equal(web1.effectiveWeight, 2);
  const early = shares(pool, 220).get('web1') ?? 0;
  assert.ok(Math.abs(early - 20) <= 1, `2 of 22 right after it came back: ${early} of 220`);

  const weights: number[] = [];
  while (performance.now() - upAt < 1400) {
    weights.push(web1.effectiveWeight);
    await sleep(50);
  }
  const ramp = weights.filter((w, i) => i === 0 || w !== weights[i - 1]);
  assert.ok(ramp.length >= 5, `the weight rose in steps: ${ramp.join(' ')}`);
  for (let i = 1; i < ramp.length; i++) assert.ok(ramp[i] > ramp[i - 1], `never falls: ${ramp.join(' ')}`);
  assert.equal(web1.effectiveWeight, 20);
  const late = shares(pool, 400).get('web1') ?? 0;
  assert.ok(Math.abs(late - 200) <= 1, `half again once the ramp is over: ${late} of 400`);
});

test('a backend back from ejection ramps up too', async (t) => {
  const pool = new Pool(
    poolConfig('api', [0, 1].map((i) => ({ name: `b${i}`, origin: `http://127.0.0.1:${9 + i}`, protocol: 'http:' as const, host: '127.0.0.1', port: 9 + i, weight: 10, backup: false, maxConnections: 1 })), {
      slowStart: 500,
      outlier: { consecutiveFailures: 1, on5xx: false, ejectFor: 50, maxEjectFor: 50, maxEjectedPercent: 50 },
    }),
    null,
  );
  const health = startPoolHealth(pool);
  t.after(() => health.stop());
  const b = pool.backends[0];
  health.outlier!.onFailure(b, 'connect');
  assert.equal(b.ejected, true);
  await until(() => !b.ejected, 500, 'back');
  assert.equal(b.effectiveWeight, 1);
  await until(() => b.effectiveWeight === 10, 1000, 'full weight');
});

test('slowStart 0 leaves the weight alone', () => {
  const pool = new Pool(poolConfig('api', [{ name: 'a', origin: 'http://127.0.0.1:9', protocol: 'http:', host: '127.0.0.1', port: 9, weight: 10, backup: false, maxConnections: 1 }]), null);
  const ss = new SlowStart(pool);
  const b = pool.backends[0];
  b.setHealthy(false, 'test');
  b.setHealthy(true, 'test');
  ss.recovered(b);
  assert.equal(b.effectiveWeight, 10);
  ss.stop();
});

test('a ramp under way goes on after a reload that keeps the backend', async () => {
  const cfg = poolConfig('api', [{ name: 'a', origin: 'http://127.0.0.1:9', protocol: 'http:', host: '127.0.0.1', port: 9, weight: 10, backup: false, maxConnections: 1 }], { slowStart: 400 });
  const old = new Pool(cfg, null);
  const first = new SlowStart(old);
  const b: Backend = old.backends[0];
  first.recovered(b);
  assert.equal(b.effectiveWeight, 1);
  await sleep(150);
  const next = new Pool({ ...cfg, retries: 4 }, null, old.byName);
  const second = new SlowStart(next);
  first.stop();
  const during = b.effectiveWeight;
  assert.ok(during > 1 && during < 10, `mid-ramp weight ${during}`);
  await until(() => b.effectiveWeight === 10, 1000, 'full weight');
  second.stop();

  // Turning slow start off in a reload ends a ramp at once.
  const again = new SlowStart(new Pool(cfg, null, next.byName));
  again.recovered(b);
  assert.equal(b.effectiveWeight, 1);
  again.stop();
  const off = new SlowStart(new Pool({ ...cfg, slowStart: 0 }, null, next.byName));
  assert.equal(b.effectiveWeight, 10);
  off.stop();
});
