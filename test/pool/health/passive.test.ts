import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { OutlierConfig } from '../../../src/config/types.ts';
import { EventBus } from '../../../src/events.ts';
import { startPoolHealth } from '../../../src/pool/health/index.ts';
import { OutlierDetector } from '../../../src/pool/health/passive.ts';
import { Pool } from '../../../src/pool/pool.ts';
import type { BackendConfig } from '../../../src/config/types.ts';
import { poolConfig, startBackend } from '../../helpers/backends.ts';
import { healthCheck, record, sleep, until } from './fixtures.ts';

function outlier(overrides: Partial<OutlierConfig> = {}): OutlierConfig {
  return { consecutiveFailures: 3, on5xx: false, ejectFor: 100, maxEjectFor: 300, maxEjectedPercent: 50, ...overrides };
}

/** Backend entries that are never dialled: passive health only hears about requests. */
function backends(n: number): BackendConfig[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `b${i + 1}`,
    origin: `http://127.0.0.1:${9 + i}`,
    protocol: 'http:' as const,
    host: '127.0.0.1',
    port: 9 + i,
    weight: 1,
    backup: false,
    maxConnections: 1,
  }));
}

function setup(n: number, cfg: Partial<OutlierConfig> = {}) {
  const bus = new EventBus();
  const events = record(bus);
  const pool = new Pool(poolConfig('api', backends(n), { outlier: outlier(cfg) }), bus);
  const detector = new OutlierDetector(pool, pool.config.outlier!);
  return { pool, detector, events };
}

test('consecutive failures eject a backend and a success in between resets the count', (t) => {
  const { pool, detector } = setup(4);
  t.after(() => detector.stop());
  const [a, b] = pool.backends;
  detector.onFailure(a, 'connect');
  detector.onFailure(a, 'reset');
  detector.onSuccess(a);
  detector.onFailure(a, 'timeout');
  detector.onFailure(a, 'connect');
  assert.equal(a.ejected, false, 'two failures since the last success');
  detector.onFailure(a, 'connect');
  assert.equal(a.ejected, true);
  assert.equal(a.isAvailable(), false);
  for (let i = 0; i < 10; i++) assert.notEqual(pool.pick(), a);
  assert.equal(b.ejected, false);
});

test('5xx answers count as failures only with on5xx', (t) => {
  const off = setup(2, { on5xx: false });
  const on = setup(2, { on5xx: true });
  t.after(() => {
    off.detector.stop();
    on.detector.stop();
  });
  for (let i = 0; i < 5; i++) {
    off.detector.onFailure(off.pool.backends[0], '5xx');
    on.detector.onFailure(on.pool.backends[0], '5xx');
  }
  assert.equal(off.pool.backends[0].ejected, false);
  assert.equal(on.pool.backends[0].ejected, true);
  // Without on5xx a 5xx proves the backend reachable: it breaks a streak of connect errors.
  const b = off.pool.backends[1];
  off.detector.onFailure(b, 'connect');
  off.detector.onFailure(b, 'connect');
  off.detector.onFailure(b, '5xx');
  off.detector.onFailure(b, 'connect');
  assert.equal(b.ejected, false);
});

test('an ejected backend comes back after ejectFor, and each repeated ejection lasts twice as long up to maxEjectFor', async (t) => {
  const { pool, detector, events } = setup(2, { ejectFor: 100, maxEjectFor: 300 });
  t.after(() => detector.stop());
  const a = pool.backends[0];
  const durations: number[] = [];
  const announced: string[] = [];
  for (let round = 0; round < 4; round++) {
    for (let i = 0; i < 3; i++) detector.onFailure(a, 'connect');
    assert.equal(a.ejected, true);
    await until(() => !a.ejected, 1000, `end of ejection ${round + 1}`);
    const [out, back] = events.slice(-2);
    assert.deepEqual([out.state, back.state], ['ejected', 'up']);
    durations.push(back.at - out.at);
    announced.push(out.reason);
  }
  const expected = [100, 200, 300, 300];
  assert.deepEqual(announced, expected.map((ms) => `3 consecutive failures; ejected for ${ms}ms`));
  for (let i = 0; i < expected.length; i++) {
    // Never shorter than announced; later only by as much as a busy event loop delays a timer.
    assert.ok(durations[i] >= expected[i] - 5 && durations[i] < expected[i] + 1000, `ejection ${i + 1} lasted ${Math.round(durations[i])}ms, want ${expected[i]}`);
  }
  assert.equal(OutlierDetector.ejections(a), 4);
});

test('the doubling decays back by one step per ejectFor of quiet time', async (t) => {
  const { pool, detector, events } = setup(2, { ejectFor: 60, maxEjectFor: 1000 });
  t.after(() => detector.stop());
  const a = pool.backends[0];
  const eject = () => {
    for (let i = 0; i < 3; i++) detector.onFailure(a, 'connect');
  };
  eject(); // 60
  await until(() => !a.ejected, 1000, 'first ejection over');
  eject(); // 120
  await until(() => !a.ejected, 1000, 'second ejection over');
  eject(); // 240
  await until(() => !a.ejected, 1000, 'third ejection over');
  assert.equal(OutlierDetector.ejections(a), 3);
  await sleep(130); // two quiet steps take the count from 3 to 1: the next one lasts 60 × 2 = 120
  eject();
  assert.equal(OutlierDetector.ejections(a), 2);
  await until(() => !a.ejected, 1000, 'fourth ejection over');
  const [out, back] = events.slice(-2);
  assert.equal(out.reason, '3 consecutive failures; ejected for 120ms');
  assert.ok(back.at - out.at >= 115, `decayed ejection lasted ${Math.round(back.at - out.at)}ms, want 120`);
});

test('no more than maxEjectedPercent of a pool is ejected at once', (t) => {
  const { pool, detector } = setup(10, { maxEjectedPercent: 30, ejectFor: 10_000 });
  t.after(() => detector.stop());
  for (const b of pool.backends) for (let i = 0; i < 3; i++) detector.onFailure(b, 'reset');
  assert.equal(pool.backends.filter((b) => b.ejected).length, 3);
  // Those kept in keep failing; they are still not ejected.
  for (const b of pool.backends) detector.onFailure(b, 'reset');
  assert.equal(pool.backends.filter((b) => b.ejected).length, 3);
});

test('one backend may always be ejected when none is, as in Envoy, unless maxEjectedPercent is 0', (t) => {
  const small = setup(2, { maxEjectedPercent: 10 });
  const never = setup(2, { maxEjectedPercent: 0 });
  t.after(() => {
    small.detector.stop();
    never.detector.stop();
  });
  for (const b of small.pool.backends) for (let i = 0; i < 3; i++) small.detector.onFailure(b, 'connect');
  assert.deepEqual(small.pool.backends.map((b) => b.ejected), [true, false]);
  for (const b of never.pool.backends) for (let i = 0; i < 3; i++) never.detector.onFailure(b, 'connect');
  assert.deepEqual(never.pool.backends.map((b) => b.ejected), [false, false]);
});

test('a passed active check ends an ejection early', async (t) => {
  const b = await startBackend({ name: 'web1' });
  const bus = new EventBus();
  const pool = new Pool(
    poolConfig('web', [b.config()], { healthCheck: healthCheck({ interval: 50 }), outlier: outlier({ ejectFor: 60_000, maxEjectFor: 60_000 }) }),
    bus,
  );
  const health = startPoolHealth(pool);
  t.after(async () => {
    await health.stop();
    await b.close();
  });
  const backend = pool.backends[0];
  await until(() => backend.checksOk >= 1, 1000, 'first check');
  for (let i = 0; i < 3; i++) health.outlier!.onFailure(backend, 'connect');
  assert.equal(backend.ejected, true);
  const waited = await until(() => !backend.ejected, 5000, 'un-ejected');
  // Far sooner than the minute of ejection: at the next check (50 ms) on an idle machine.
  assert.ok(waited < 2000, `un-ejected after ${Math.round(waited)}ms`);
  assert.equal(backend.healthy, true);
});

test('a failing active check does not end an ejection', async (t) => {
  const b = await startBackend({ name: 'web1' });
  b.healthStatus = 503;
  const pool = new Pool(
    poolConfig('web', [b.config()], { healthCheck: healthCheck({ interval: 30, fall: 100 }), outlier: outlier({ ejectFor: 60_000 }) }),
    null,
  );
  const health = startPoolHealth(pool);
  t.after(async () => {
    await health.stop();
    await b.close();
  });
  const backend = pool.backends[0];
  for (let i = 0; i < 3; i++) health.outlier!.onFailure(backend, 'connect');
  await until(() => backend.checksFailed >= 4, 1000, 'failed checks');
  assert.equal(backend.ejected, true);
});

test('an ejection made under the old config ends on time under the new one', async (t) => {
  const cfg = poolConfig('api', backends(3), { outlier: outlier({ ejectFor: 150 }) });
  const old = new Pool(cfg, null);
  const first = startPoolHealth(old);
  const a = old.backends[0];
  for (let i = 0; i < 3; i++) first.outlier!.onFailure(a, 'connect');
  assert.equal(a.ejected, true);
  const next = new Pool({ ...cfg, retries: 3 }, null, old.byName);
  const second = startPoolHealth(next);
  await first.stop();
  t.after(() => second.stop());
  assert.equal(next.backends[0], a);
  assert.equal(a.ejected, true, 'still ejected after the reload');
  await until(() => !a.ejected, 2000, 'un-ejected');
  // And the history carried over: the next ejection is the doubled one.
  for (let i = 0; i < 3; i++) second.outlier!.onFailure(a, 'connect');
  assert.equal(OutlierDetector.ejections(a), 2);
});

test('a reload that turns outlier detection off brings ejected backends back', () => {
  const cfg = poolConfig('api', backends(2), { outlier: outlier({ ejectFor: 60_000 }) });
  const old = new Pool(cfg, null);
  const first = startPoolHealth(old);
  for (let i = 0; i < 3; i++) first.outlier!.onFailure(old.backends[0], 'connect');
  assert.equal(old.backends[0].ejected, true);
  const next = new Pool({ ...cfg, outlier: null }, null, old.byName);
  const second = startPoolHealth(next);
  void first.stop();
  void second.stop();
  assert.equal(second.outlier, null);
  assert.equal(next.backends[0].ejected, false);
});
