import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import type { HealthCheckConfig } from '../../../src/config/types.ts';
import { EventBus } from '../../../src/events.ts';
import { HealthChecker } from '../../../src/pool/health/active.ts';
import { Pool } from '../../../src/pool/pool.ts';
import { poolConfig, startBackend, startBackends, stopAll } from '../../helpers/backends.ts';
import type { TestBackend } from '../../helpers/backends.ts';
import { healthCheck, record, sleep, until } from './fixtures.ts';

/** A pool over `backends` with these check settings, checked until the test ends. */
function checkedPool(t: TestContext, backends: TestBackend[], check: Partial<HealthCheckConfig> = {}) {
  const bus = new EventBus();
  const events = record(bus);
  const pool = new Pool(poolConfig('web', backends.map((b) => b.config()), { healthCheck: healthCheck(check) }), bus);
  const checker = new HealthChecker(pool);
  checker.start();
  t.after(async () => {
    await checker.stop();
    await pool.close();
    await stopAll(backends);
  });
  return { pool, checker, events, bus };
}

test('a backend that fails every other check never changes state with rise 2 and fall 3', async (t) => {
  const [up, down] = await startBackends(2, 'flap');
  // The up one starts healthy, the down one unhealthy: neither streak ever reaches 2 or 3.
  up.healthStatus = (n) => (n % 2 === 0 ? 500 : 200);
  down.healthStatus = (n) => (n % 2 === 0 ? 500 : 200);
  const bus = new EventBus();
  const events = record(bus);
  const cfg = (name: string, b: TestBackend, startUnhealthy: boolean) =>
    new Pool(poolConfig(name, [b.config()], { healthCheck: healthCheck({ startUnhealthy }) }), bus);
  const pools = [cfg('a', up, false), cfg('b', down, true)];
  const checkers = pools.map((p) => new HealthChecker(p));
  for (const c of checkers) c.start();
  t.after(async () => {
    await Promise.all(checkers.map((c) => c.stop()));
    await stopAll([up, down]);
  });
  await until(() => up.healthChecks >= 16 && down.healthChecks >= 16, 5000, '16 checks each');
  assert.deepEqual(events, []);
  assert.equal(pools[0].backends[0].healthy, true);
  assert.equal(pools[1].backends[0].healthy, false);
  const b = pools[0].backends[0];
  assert.ok(b.checksOk >= 7 && b.checksFailed >= 7, `ok ${b.checksOk} failed ${b.checksFailed}`);
});

test('a stopped backend is marked down within interval × fall + timeout and comes back after rise passed checks', async (t) => {
  const [b1, b2] = await startBackends(2, 'web');
  const interval = 100;
  const timeout = 200;
  const { pool, events } = checkedPool(t, [b1, b2], { interval, timeout, rise: 2, fall: 3 });
  const backend = pool.byName.get('web1')!;
  await until(() => backend.checksOk >= 2, 1000, 'first checks');

  const stoppedAt = performance.now();
  const failedBefore = backend.checksFailed;
  await b1.stop();
  await until(() => !backend.healthy, 5000, 'marked down');
  const downAfter = performance.now() - stoppedAt;
  // Down at the third failed check: the first comes at most one interval (plus jitter)
  // after the stop, so interval × 3 + timeout on time; the allowance is for a busy
  // machine's timers, the count is what must hold.
  assert.ok(backend.checksFailed - failedBefore >= 3, `down after ${backend.checksFailed - failedBefore} failed checks`);
  assert.ok(downAfter <= interval * 3 + timeout + 1000, `down after ${Math.round(downAfter)}ms`);
  assert.ok(downAfter >= interval * 2 - interval * 0.1, `not before three checks failed (${Math.round(downAfter)}ms)`);
  assert.match(backend.lastCheck!.detail, /ECONNREFUSED/);
  assert.equal(pool.byName.get('web2')!.healthy, true, 'the other backend is untouched');

  const okBefore = backend.checksOk;
  await b1.restart();
  const upAfter = await until(() => backend.healthy, 5000, 'marked up');
  assert.equal(backend.checksOk - okBefore, 2, 'up exactly at the second passed check');
  assert.ok(upAfter <= interval * 2 + 1000, `up after ${Math.round(upAfter)}ms`);
  assert.deepEqual(
    events.map((e) => `${e.backend} ${e.state}`),
    ['web1 down', 'web1 up'],
  );
});

test('checks of 180 backends keep their pace while 20 others are black holes', async (t) => {
  const backends = await startBackends(200, 'm');
  const holes = new Set(backends.filter((_, i) => i % 10 === 3));
  for (const b of holes) b.mode = 'blackhole';
  const { pool } = checkedPool(t, backends, { interval: 300, timeout: 1000, fall: 3 });
  const healthy = pool.backends.filter((b) => !holes.has(backends.find((x) => x.name === b.name)!));
  // Every healthy backend checked twice: a check at start, the next 300 ms later, well
  // under a second on an idle machine. Checks made one after another would wait a second
  // on each of the 20 black holes per round, 20 s before the last backend's second check;
  // 8 s is far from both, so a busy machine's lost rounds do not decide it.
  const t0 = performance.now();
  await until(() => healthy.every((b) => b.checksOk + b.checksFailed >= 2), 8000, 'every healthy backend checked twice');
  t.diagnostic(`every healthy backend checked twice after ${Math.round(performance.now() - t0)} ms`);
  for (const b of healthy) assert.equal(b.healthy, true, `${b.name}: ${b.lastCheck?.detail}`);
  for (const b of pool.backends.filter((x) => !healthy.includes(x))) {
    assert.equal(b.checksOk, 0);
    assert.ok(b.checksFailed <= 3, `${b.name} failed ${b.checksFailed}`);
  }
  await until(() => pool.backends.filter((b) => !b.healthy).length === 20, 3000, 'the black holes down after three timeouts');
  assert.deepEqual(pool.backends.filter((b) => !b.healthy).map((b) => b.name), [...holes].map((h) => h.name));
});

test('with startUnhealthy a backend gets traffic only after rise passed checks', async (t) => {
  const b = await startBackend({ name: 'cold' });
  const { pool } = checkedPool(t, [b], { startUnhealthy: true, rise: 3 });
  const backend = pool.backends[0];
  assert.equal(backend.healthy, false);
  assert.equal(pool.pick(), null);
  await until(() => backend.healthy, 1000, 'up');
  assert.equal(backend.checksOk, 3);
  assert.equal(pool.pick(), backend);
});

test('the status must fall in one of the expected ranges', async (t) => {
  const backends = await startBackends(4, 's');
  const [s1, s2, s3, s4] = backends;
  s1.healthStatus = 204; // in [204, 204]
  s2.healthStatus = 200; // outside [204, 204] and [300, 302]
  s3.healthStatus = 302; // in [300, 302]
  s4.healthStatus = 404;
  const { pool } = checkedPool(t, backends, { expectStatus: [[204, 204], [300, 302]], fall: 2 });
  await until(() => pool.backends.every((b) => b.checksOk + b.checksFailed >= 3), 2000, 'three checks each');
  assert.deepEqual(pool.backends.map((b) => b.healthy), [true, false, true, false]);
  assert.equal(pool.byName.get('s2')!.lastCheck!.detail, 'status 200');
});

test('the default expected statuses are 200 to 399', async (t) => {
  const backends = await startBackends(3, 'd');
  backends[0].healthStatus = 399;
  backends[1].healthStatus = 400;
  backends[2].healthStatus = 500;
  const { pool } = checkedPool(t, backends, { fall: 1 });
  await until(() => pool.backends.every((b) => b.checksOk + b.checksFailed >= 2), 2000, 'two checks each');
  assert.deepEqual(pool.backends.map((b) => b.healthy), [true, false, false]);
});

test('the body must contain the expected substring within the first 8 KiB', async (t) => {
  const backends = await startBackends(3, 'body');
  backends[0].healthBody = 'status: all good';
  backends[1].healthBody = 'status: degraded';
  backends[2].healthBody = 'x'.repeat(64 * 1024) + 'good'; // too far in
  const { pool } = checkedPool(t, backends, { expectBody: 'good', fall: 1 });
  await until(() => pool.backends.every((b) => b.checksOk + b.checksFailed >= 2), 2000, 'two checks each');
  assert.deepEqual(pool.backends.map((b) => b.healthy), [true, false, false]);
  assert.equal(pool.byName.get('body2')!.lastCheck!.detail, 'body lacks "good"');
});

test('HEAD checks send HEAD, and the Host header is the backend address unless configured', async (t) => {
  const [plain, named] = await startBackends(2, 'h');
  const bus = new EventBus();
  const pools = [
    new Pool(poolConfig('plain', [plain.config()], { healthCheck: healthCheck({ method: 'HEAD' }) }), bus),
    new Pool(poolConfig('named', [named.config()], { healthCheck: healthCheck({ host: 'status.example' }) }), bus),
  ];
  const checkers = pools.map((p) => new HealthChecker(p));
  for (const c of checkers) c.start();
  t.after(async () => {
    await Promise.all(checkers.map((c) => c.stop()));
    await stopAll([plain, named]);
  });
  await until(() => plain.healthChecks >= 2 && named.healthChecks >= 2, 1000, 'checks');
  assert.deepEqual(plain.lastHealth, { method: 'HEAD', host: `127.0.0.1:${plain.port}` });
  assert.deepEqual(named.lastHealth, { method: 'GET', host: 'status.example' });
  assert.equal(pools[0].backends[0].checksFailed, 0);
});

test('a check port sends checks to that port instead of the traffic port', async (t) => {
  const traffic = await startBackend({ name: 'app' });
  const sidecar = await startBackend({ name: 'sidecar' });
  traffic.healthStatus = 500;
  const { pool } = checkedPool(t, [traffic], { port: sidecar.port, fall: 1 });
  t.after(() => sidecar.close());
  await until(() => sidecar.healthChecks >= 3, 1000, 'checks on the sidecar');
  assert.equal(traffic.healthChecks, 0);
  assert.equal(pool.backends[0].healthy, true);
});

test('checks use their own connections, never the traffic upstream', async (t) => {
  const b = await startBackend({ name: 'own' });
  const { pool } = checkedPool(t, [b]);
  const backend = pool.backends[0];
  await until(() => b.healthChecks >= 5, 1000, 'checks');
  const stats = backend.upstream.stats;
  assert.equal(stats.connected, 0);
  assert.equal(stats.size, 0);
});

test('a check never overlaps the previous check of the same backend', async (t) => {
  const b = await startBackend({ name: 'slow' });
  b.mode = 'blackhole';
  // Timeout four times the interval: overlapping checks would pile up connections.
  const { pool } = checkedPool(t, [b], { interval: 50, timeout: 200 });
  await sleep(700);
  const backend = pool.backends[0];
  // 700 ms / 200 ms timeouts: at most 4 checks (each began after the one before it gave up).
  assert.ok(backend.checksFailed <= 4 && backend.checksFailed >= 2, `failed ${backend.checksFailed}`);
  // Every check that reached the backend has ended, but for at most the one in flight.
  assert.ok(b.healthChecks <= backend.checksFailed + 1, `${b.healthChecks} checks reached the backend`);
});

test('health state and streaks survive a reload that keeps the backend', async (t) => {
  const b = await startBackend({ name: 'keep' });
  const bus = new EventBus();
  const events = record(bus);
  const cfg = poolConfig('web', [b.config()], { healthCheck: healthCheck({ rise: 3, fall: 3 }) });
  const old = new Pool(cfg, bus);
  const oldChecker = new HealthChecker(old);
  oldChecker.start();
  const backend = old.backends[0];
  await b.stop();
  await until(() => !backend.healthy, 1000, 'down');
  await b.restart();
  // One passed check under the old config, then the reload.
  await until(() => backend.lastCheck?.ok === true, 1000, 'first pass');
  await oldChecker.stop();
  const passedBefore = backend.checksOk;

  const next = new Pool({ ...cfg, retries: 2 }, bus, old.byName);
  assert.equal(next.backends[0], backend, 'the new pool reuses the Backend');
  const checker = new HealthChecker(next);
  checker.start();
  t.after(async () => {
    await checker.stop();
    await b.close();
  });
  assert.equal(backend.healthy, false, 'still down right after the reload');
  await until(() => backend.healthy, 1000, 'up');
  assert.equal(backend.checksOk - passedBefore, 2, 'the streak went on from where it was');
  assert.deepEqual(events.map((e) => e.state), ['down', 'up']);
});

test('stop ends the checks', async (t) => {
  const b = await startBackend({ name: 'stop' });
  const pool = new Pool(poolConfig('web', [b.config()], { healthCheck: healthCheck() }), null);
  const checker = new HealthChecker(pool);
  checker.start();
  t.after(() => b.close());
  await until(() => b.healthChecks >= 2, 1000, 'checks');
  await checker.stop();
  const n = b.healthChecks;
  await sleep(200);
  assert.equal(b.healthChecks, n);
});
