import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request } from 'undici';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

async function get(dispatcher: Agent, url: string): Promise<{ status: number; body: string; backend: string | undefined }> {
  const res = await request(url, { dispatcher });
  const body = await res.body.text();
  return { status: res.statusCode, body, backend: res.headers['x-backend'] as string | undefined };
}

describe('balancing through a real tandem process', () => {
  const backends: TestBackend[] = [];
  const procs: TandemProcess[] = [];
  const agent = new Agent({ connections: 1 });
  after(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await Promise.all(backends.map((b) => b.close()));
    await agent.close();
  });

  test('700 requests over weights 5:1:1 split exactly 500/100/100 in the smooth order', async () => {
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((name) => startBackend({ name })));
    backends.push(a, b, c);
    const t = await startTandem(singlePool([
      { name: 'a', url: a.url, weight: 5 },
      { name: 'b', url: b.url, weight: 1 },
      { name: 'c', url: c.url, weight: 1 },
    ]));
    procs.push(t);
    const order: string[] = [];
    for (let i = 0; i < 700; i++) {
      const r = await get(agent, `${t.url}/x`);
      assert.equal(r.status, 200);
      order.push(r.backend!);
    }
    const counts = { a: 0, b: 0, c: 0 } as Record<string, number>;
    for (const name of order) counts[name]++;
    assert.deepEqual(counts, { a: 500, b: 100, c: 100 });
    // Smooth: the first cycle is a a b a c a a, and every later cycle repeats it.
    assert.deepEqual(order.slice(0, 7), ['a', 'a', 'b', 'a', 'c', 'a', 'a']);
    for (let i = 7; i < 700; i++) assert.equal(order[i], order[i % 7], `pick ${i}`);
    assert.deepEqual([a.requests, b.requests, c.requests], [500, 100, 100]);
    await t.stop();
  });

  test('a backup backend gets nothing while a primary is up and everything once all primaries are down', async () => {
    const [p1, p2, spare] = await Promise.all(['p1', 'p2', 'spare'].map((name) => startBackend({ name })));
    backends.push(p1, p2, spare);
    const t = await startTandem(singlePool([
      { name: 'p1', url: p1.url },
      { name: 'p2', url: p2.url },
      { name: 'spare', url: spare.url, backup: true },
    ], { healthCheck: { path: '/healthz', interval: '100ms', timeout: '80ms', rise: 1, fall: 1 } }));
    procs.push(t);
    for (let i = 0; i < 50; i++) assert.equal((await get(agent, `${t.url}/`)).status, 200);
    assert.equal(spare.requests, 0);
    assert.equal(p1.requests + p2.requests, 50);

    await p1.stop();
    await p2.stop();
    // Down within one check round plus its timeout.
    const deadline = Date.now() + 3000;
    let served = '';
    while (Date.now() < deadline) {
      const r = await get(agent, `${t.url}/`);
      if (r.status === 200 && r.backend === 'spare') { served = 'spare'; break; }
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(served, 'spare');
    const before = spare.requests;
    for (let i = 0; i < 30; i++) {
      const r = await get(agent, `${t.url}/`);
      assert.equal(r.status, 200);
      assert.equal(r.backend, 'spare');
    }
    assert.equal(spare.requests - before, 30);

    // A primary back: the backup is left alone again.
    await p1.restart();
    const deadline2 = Date.now() + 3000;
    while (Date.now() < deadline2 && (await get(agent, `${t.url}/`)).backend !== 'p1') await new Promise((res) => setTimeout(res, 50));
    const spareBefore = spare.requests;
    for (let i = 0; i < 20; i++) assert.equal((await get(agent, `${t.url}/`)).backend, 'p1');
    assert.equal(spare.requests, spareBefore);
    await t.stop();
  });
});
