// Retries, the retry budget, panic mode and the debug header, through a real tandem
// process in front of real backends.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { until } from '../cluster/support.ts';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const backends: TestBackend[] = [];
const procs: TandemProcess[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(backends.map((b) => b.close()));
});

async function two(): Promise<[TestBackend, TestBackend]> {
  const pair = await Promise.all([startBackend({ name: 'r1' }), startBackend({ name: 'r2' })]);
  backends.push(...pair);
  return pair;
}

async function tandem(b1: TestBackend, b2: TestBackend, pool: Record<string, unknown>): Promise<TandemProcess> {
  const t = await startTandem(singlePool([{ name: 'r1', url: b1.url }, { name: 'r2', url: b2.url }], pool));
  procs.push(t);
  return t;
}

async function get(t: TandemProcess, init: { method?: string; body?: string } = {}): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  const r = await request(`${t.url}/x`, { method: (init.method ?? 'GET') as 'GET', body: init.body });
  return { status: r.statusCode, body: await r.body.text(), headers: r.headers };
}

describe('retries and all-down behaviour through a real tandem process', () => {
  test('a POST whose connection was refused goes to another backend: nothing had been sent', async () => {
    const [r1, r2] = await two();
    const t = await tandem(r1, r2, { retries: 1 });
    await r1.stop();
    const answers = [];
    for (let i = 0; i < 10; i++) answers.push(await get(t, { method: 'POST', body: 'order=1' }));
    assert.deepEqual(answers.map((a) => a.status), Array(10).fill(200));
    assert.deepEqual(new Set(answers.map((a) => a.body)), new Set(['r2']));
    assert.equal(r2.requests, 10, 'each POST reached r2 exactly once');
  });

  test('the retry budget caps retries in flight at a fifth of active requests (at least 3), so a failing backend cannot double the load', async (ctx) => {
    const [r1, r2] = await two();
    r1.mode = 'reset';
    // r2 is slow, so every retry sent to it stays in flight while the burst arrives.
    r2.delayMs = 1500;
    const t = await tandem(r1, r2, { retries: 1, retryBudget: 20 });
    const N = 40;
    const answers = await Promise.all(Array.from({ length: N }, () => get(t)));
    const failed = answers.filter((a) => a.status === 502).length;
    const served = answers.filter((a) => a.status === 200).length;
    assert.equal(failed + served, N, answers.map((a) => a.status).join(','));
    // Each request that reached r1 was either retried on r2 or answered 502.
    const retried = r1.requests - failed;
    ctx.diagnostic(`of ${N}: ${r1.requests} reached r1, ${retried} retried, ${failed} answered 502`);
    assert.ok(r1.requests > 0, 'the burst reached the resetting backend');
    assert.ok(retried <= Math.max(3, (N * 20) / 100), `${retried} retries in flight at once`);
    assert.ok(failed > 0, 'requests past the budget were answered 502, not retried');
    assert.equal(r2.requests, served, 'r2 served every 200 once');
  });

  test('retries of refused connections take no place in the budget, so they cannot turn away the retry of a reset GET', async () => {
    const [r1, r2] = await two();
    const r3 = await startBackend({ name: 'r3' });
    backends.push(r3);
    const t = await startTandem(singlePool([{ name: 'r1', url: r1.url }, { name: 'r2', url: r2.url }, { name: 'r3', url: r3.url }],
      { retries: 1, retryBudget: 20 }));
    procs.push(t);
    // r1 refuses, so the GETs sent to it go to the slow r2 and r3 and stay in flight there.
    await r1.stop();
    r2.delayMs = 4000;
    r3.delayMs = 4000;
    const N = 15;
    const first = Array.from({ length: N }, () => get(t));
    await until(async () => r2.requests + r3.requests === N, 10_000, 'every GET of the burst to reach r2 or r3');
    // Then r3 resets what it gets next: those GETs need a retry from the budget.
    await r1.restart();
    r3.mode = 'reset';
    const before = r3.requests;
    const second = await Promise.all(Array.from({ length: 3 }, () => get(t)));
    assert.ok(r3.requests > before, 'a GET of the second round reached the resetting r3');
    assert.deepEqual(second.map((a) => a.status), [200, 200, 200], second.map((a) => a.body).join(','));
    assert.deepEqual((await Promise.all(first)).map((a) => a.status), Array(N).fill(200));
  });

  test('with panic on, a pool whose backends all fail their checks still sends traffic to all of them; without it, a 503', async () => {
    const hc = { path: '/healthz', interval: '100ms', timeout: '80ms', rise: 1, fall: 1 };
    const [r1, r2] = await two();
    r1.healthStatus = 503;
    r2.healthStatus = 503;
    const panicking = await tandem(r1, r2, { healthCheck: hc, panic: true });
    const [s1, s2] = await two();
    s1.healthStatus = 503;
    s2.healthStatus = 503;
    const strict = await tandem(s1, s2, { healthCheck: hc });
    const allDown = (t: TandemProcess) => until(async () => {
      const s = await (await fetch(`${t.admin}/api/v1/status`)).json() as { pools: { backends: { state: string }[] }[] };
      return s.pools[0].backends.every((b) => b.state === 'down');
    }, 5000, 'every backend to go down');
    await Promise.all([allDown(panicking), allDown(strict)]);
    const answers = [];
    for (let i = 0; i < 10; i++) answers.push(await get(panicking));
    assert.deepEqual(answers.map((a) => a.status), Array(10).fill(200));
    assert.deepEqual(answers.map((a) => a.body).sort(), [...Array(5).fill('r1'), ...Array(5).fill('r2')], 'spread over all backends');
    const refused = await get(strict);
    assert.equal(refused.status, 503);
    assert.equal(refused.headers['retry-after'], '1');
    assert.match(refused.body, /TANDEM_ERR_NO_BACKEND/);
  });

  test('x-tandem-backend names the backend only when the pool turns debugHeaders on', async () => {
    const [r1, r2] = await two();
    const quiet = await tandem(r1, r2, {});
    const debug = await tandem(r1, r2, { debugHeaders: true });
    assert.equal((await get(quiet)).headers['x-tandem-backend'], undefined);
    const a = await get(debug);
    assert.equal(a.headers['x-tandem-backend'], a.body);
  });
});
