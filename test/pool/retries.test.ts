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

/** Runs `fn` `n` times, at most `width` at once; the results in order. */
async function inParallel<T>(n: number, width: number, fn: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) {
      const i = next++;
      out[i] = await fn();
    }
  }));
  return out;
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

  test('the retry budget lets a backend that resets everything add at most a fifth of the requests (plus 10 a second) as retries, so it cannot double the load', async (ctx) => {
    const [r1, r2] = await two();
    r1.mode = 'reset';
    const t = await tandem(r1, r2, { retries: 1, retryBudget: 20 });
    const N = 800;
    const t0 = performance.now();
    const answers = await inParallel(N, 20, () => get(t));
    const seconds = (performance.now() - t0) / 1000;
    const failed = answers.filter((a) => a.status === 502).length;
    const served = answers.filter((a) => a.status === 200).length;
    assert.equal(failed + served, N, answers.map((a) => a.status).join(','));
    // Each request that reached r1 was either retried on r2 or answered 502.
    const retried = r1.requests - failed;
    ctx.diagnostic(`of ${N} in ${seconds.toFixed(1)} s: ${r1.requests} reached r1, ${retried} retried, ${failed} answered 502`);
    // 20 % of the requests, and the reserve of 10 a second for each 10 s window begun.
    const allowed = (N * 20) / 100 + 100 * Math.ceil(seconds / 10);
    assert.ok(retried <= allowed, `${retried} retries (allowed ${allowed})`);
    assert.ok(failed > 0, 'requests past the budget were answered 502, not retried');
    assert.equal(r2.requests, served, 'r2 served every 200 once');
  });

  test('retries of refused connections take nothing from the budget: with retryBudget 0, every GET sent to a stopped backend is sent on', async () => {
    const [r1, r2] = await two();
    const t = await tandem(r1, r2, { retries: 1, retryBudget: 0 });
    await r1.stop();
    // Far more refused connections than the reserve (100 in 10 s) would let through.
    const answers = await inParallel(400, 20, () => get(t));
    assert.deepEqual(answers.filter((a) => a.status !== 200).map((a) => a.body), []);
    assert.equal(r2.requests, 400);
  });

  test('a GET whose backend dies after a reload is retried on a backend of its own config, whose connections stay open for it', async () => {
    const [r1, r2] = await two();
    const pool = (response: string) => singlePool([{ name: 'r1', url: r1.url }, { name: 'r2', url: r2.url }], { retries: 1, timeouts: { response } });
    const t = await startTandem(pool('10s'));
    procs.push(t);
    r1.delayMs = 2000;
    r2.delayMs = 2000;
    const answers = Promise.all(Array.from({ length: 4 }, () => get(t)));
    await until(async () => r1.requests === 2 && r2.requests === 2, 10_000, 'two GETs at each backend');
    // A new response timeout gives every backend new connection pools; the old ones close
    // once their requests are done.
    await t.reload(pool('11s'));
    r2.delayMs = 0;
    await r1.stop();
    const got = await answers;
    assert.deepEqual(got.map((a) => a.status), [200, 200, 200, 200], got.map((a) => a.body).join(' | '));
    assert.equal(r2.requests, 4, 'the two GETs r1 had were sent on to r2');
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
