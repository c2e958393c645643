import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import autocannon from 'autocannon';
import { request } from 'undici';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const backends: TestBackend[] = [];
const procs: TandemProcess[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(backends.map((b) => b.close()));
});

describe('hot reload', () => {
  test('reloading every second with changed weights under load gives no non-2xx and no socket error', async () => {
    const [a, b] = await Promise.all([startBackend({ name: 'a' }), startBackend({ name: 'b' })]);
    backends.push(a, b);
    const conf = (wa: number, wb: number) => singlePool([
      { name: 'a', url: a.url, weight: wa },
      { name: 'b', url: b.url, weight: wb },
    ], { healthCheck: { path: '/healthz', interval: '500ms', timeout: '200ms' } });
    const t = await startTandem(conf(1, 1));
    procs.push(t);
    const load = autocannon({ url: `${t.url}/`, connections: 20, duration: 10 });
    const outcomes: string[] = [];
    for (let i = 1; i <= 9; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      outcomes.push(await t.reload(conf(1 + (i % 4), 1 + ((i + 2) % 3))));
    }
    const result = await load;
    assert.deepEqual(outcomes, Array(9).fill('reloaded'));
    assert.ok(result.requests.total > 1000, `load ran (${result.requests.total} requests)`);
    assert.equal(result.non2xx, 0, 'non-2xx responses');
    assert.equal(result.errors, 0, 'socket errors');
    assert.equal(result.timeouts, 0, 'timeouts');
    // The last weights (1+9%4=2, 1+11%3=3) are in force: b now gets 3 of every 5.
    // (autocannon resolves with its last requests still landing: let them.)
    await new Promise((r) => setTimeout(r, 300));
    const before = { a: a.requests, b: b.requests };
    for (let i = 0; i < 50; i++) await (await request(`${t.url}/`)).body.text();
    assert.deepEqual({ a: a.requests - before.a, b: b.requests - before.b }, { a: 20, b: 30 });
  });

  test('a broken file is rejected with FILE:LINE:COL, and traffic goes on with the old config', async () => {
    const a = await startBackend({ name: 'a' });
    backends.push(a);
    const good = singlePool([{ name: 'a', url: a.url }]);
    const t = await startTandem(good);
    procs.push(t);
    const broken = good.replace(/weight: \d+|url: /, 'wieght: 2\n        url: ');
    const res = await fetch(`${t.admin}/api/v1/reload`, { method: 'POST' }).catch(() => null);
    assert.ok(res === null || res.status === 200, 'reloading an unchanged file works');
    const outcome = await t.reload(broken);
    assert.match(outcome, /reload rejected/);
    assert.match(outcome, /tandem\.yaml:\d+:\d+: pools\.web\.backends\[0\]/);
    const r = await request(`${t.url}/`);
    assert.equal(r.statusCode, 200);
    assert.equal(await r.body.text(), 'a');
    if (t.admin !== null) {
      const api = await fetch(`${t.admin}/api/v1/reload`, { method: 'POST' });
      assert.equal(api.status, 400);
      const body = await api.json() as { errors: string[] };
      assert.match(body.errors.join('\n'), /tandem\.yaml:\d+:\d+: pools\.web\.backends\[0\]/);
    }
  });
});
