// Draining, disabling and removing a backend through a real tandem process, while
// requests are in flight: what the admin API promises is what clients see.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { until } from '../cluster/support.ts';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const SLOW_MS = 800;

const backends: TestBackend[] = [];
const procs: TandemProcess[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(backends.map((b) => b.close()));
});

async function pair(pool: Record<string, unknown> = {}): Promise<{ t: TandemProcess; b1: TestBackend; b2: TestBackend }> {
  const [b1, b2] = await Promise.all([startBackend({ name: 'b1' }), startBackend({ name: 'b2' })]);
  // `/slow` is answered after SLOW_MS, everything else at once.
  for (const b of [b1, b2]) b.delayMs = (path) => (path === '/slow' ? SLOW_MS : 0);
  backends.push(b1, b2);
  const t = await startTandem(singlePool([{ name: 'b1', url: b1.url }, { name: 'b2', url: b2.url }], { debugHeaders: true, ...pool }));
  procs.push(t);
  return { t, b1, b2 };
}

async function get(t: TandemProcess, path: string): Promise<{ status: number; backend: string; body: string }> {
  const r = await request(`${t.url}${path}`);
  const body = await r.body.text();
  return { status: r.statusCode, backend: String(r.headers['x-tandem-backend'] ?? ''), body };
}

async function admin(t: TandemProcess, action: string, backend: string): Promise<void> {
  const r = await fetch(`${t.admin}/api/v1/pools/web/backends/${backend}/${action}`, { method: 'POST', headers: { 'content-type': 'application/json' } });
  assert.equal(r.status, 200, await r.text());
}

interface BackendView { state: string; active: number; healthy: boolean }

async function backendStatus(t: TandemProcess, name: string): Promise<BackendView> {
  const s = await (await fetch(`${t.admin}/api/v1/status`)).json() as { pools: { name: string; backends: ({ name: string } & BackendView)[] }[] };
  return s.pools.find((p) => p.name === 'web')!.backends.find((x) => x.name === name)!;
}

describe('backend administration through a real tandem process', () => {
  test('a drained backend finishes its requests in flight and gets no new ones; enable brings it back', async () => {
    const { t } = await pair();
    // Two slow requests at once: the round-robin sends one to each backend.
    const inFlight = [get(t, '/slow'), get(t, '/slow')];
    await new Promise((r) => setTimeout(r, 200));
    await admin(t, 'drain', 'b1');
    const during = await backendStatus(t, 'b1');
    assert.equal(during.state, 'draining');
    assert.equal(during.active, 1, 'b1 still has its request in flight');
    const fresh = await Promise.all(Array.from({ length: 10 }, () => get(t, '/')));
    assert.deepEqual(new Set(fresh.map((r) => r.backend)), new Set(['b2']), 'no new request went to the draining backend');
    const finished = await Promise.all(inFlight);
    assert.deepEqual(finished.map((r) => r.status), [200, 200]);
    assert.deepEqual(finished.map((r) => r.body).sort(), ['b1', 'b2'], 'the request on b1 completed there');
    assert.equal((await backendStatus(t, 'b1')).active, 0);
    await admin(t, 'enable', 'b1');
    const back = await Promise.all(Array.from({ length: 10 }, () => get(t, '/')));
    assert.equal(back.filter((r) => r.backend === 'b1').length, 5, 'an even split again');
  });

  test('a disabled backend stays out while its health checks fail and pass again, until it is enabled', async () => {
    const hc = { path: '/healthz', interval: '100ms', timeout: '80ms', rise: 2, fall: 2 };
    const { t, b1 } = await pair({ healthCheck: hc });
    await admin(t, 'disable', 'b1');
    assert.equal((await backendStatus(t, 'b1')).state, 'disabled');
    // Down and up again by its checks: health alone must not bring a disabled backend back.
    b1.healthStatus = 503;
    await until(async () => !(await backendStatus(t, 'b1')).healthy, 5000, 'b1 to fail its checks');
    b1.healthStatus = 200;
    await until(async () => (await backendStatus(t, 'b1')).healthy, 5000, 'b1 to pass its checks again');
    assert.equal((await backendStatus(t, 'b1')).state, 'disabled');
    const before = b1.requests;
    const during = await Promise.all(Array.from({ length: 10 }, () => get(t, '/')));
    assert.deepEqual(new Set(during.map((r) => r.backend)), new Set(['b2']));
    assert.equal(b1.requests, before, 'b1 got no request while disabled');
    await admin(t, 'enable', 'b1');
    const after = await Promise.all(Array.from({ length: 10 }, () => get(t, '/')));
    assert.ok(after.some((r) => r.backend === 'b1'), 'enabled and healthy, b1 serves again');
  });

  test('a reload that removes a backend lets its request in flight finish there, and sends it nothing new', async () => {
    const { t, b1, b2 } = await pair();
    const inFlight = [get(t, '/slow'), get(t, '/slow')];
    await new Promise((r) => setTimeout(r, 200));
    await t.reload(singlePool([{ name: 'b2', url: b2.url }], { debugHeaders: true }));
    const before = b1.requests;
    const fresh = await Promise.all(Array.from({ length: 10 }, () => get(t, '/')));
    assert.deepEqual(new Set(fresh.map((r) => r.backend)), new Set(['b2']));
    assert.equal(b1.requests, before, 'the removed backend got nothing new');
    const finished = await Promise.all(inFlight);
    assert.deepEqual(finished.map((r) => r.status), [200, 200]);
    assert.deepEqual(finished.map((r) => r.body).sort(), ['b1', 'b2'], 'the request on the removed backend completed');
  });
});
