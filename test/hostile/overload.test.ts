// Overload protection: a backend at its maxConnections is passed over while another has
// room; when all are full requests wait in a bounded queue and get 503 with Retry-After
// when it is full or their wait runs out; a route's rate limit answers 429.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { config } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { RateLimiter } from '../../src/dataplane/rate-limit.ts';

const backends: TestBackend[] = [];
const procs: TandemProcess[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(backends.map((b) => b.close()));
});

async function tandem(pool: Record<string, unknown>, route: Record<string, unknown> = {}): Promise<string> {
  const t = await startTandem(config({ routes: [{ name: 'all', pool: 'web', ...route }], pools: { web: pool } }));
  procs.push(t);
  return t.url;
}

async function get(url: string): Promise<{ status: number; body: string; retryAfter: string | undefined; backend: string | undefined }> {
  const r = await request(url, { headersTimeout: 20_000, bodyTimeout: 20_000 });
  return { status: r.statusCode, body: await r.body.text(), retryAfter: r.headers['retry-after'] as string | undefined, backend: r.headers['x-backend'] as string | undefined };
}

test('a backend at maxConnections is not picked while another has room; the rest wait and are served', async () => {
  const [a, b] = await Promise.all([startBackend({ name: 'a' }), startBackend({ name: 'b' })]);
  backends.push(a, b);
  // a takes the weight, so a balancer blind to fullness would send it nearly everything.
  a.delayMs = 800;
  b.delayMs = 800;
  const url = await tandem({ backends: [
    { name: 'a', url: a.url, weight: 10, maxConnections: 2 },
    { name: 'b', url: b.url, weight: 1, maxConnections: 2 },
  ], queue: { size: 10, timeout: "10s" } });
  const answers = await Promise.all(Array.from({ length: 6 }, (_, i) => get(`${url}/r${i}`)));
  assert.deepEqual(answers.map((x) => x.status), [200, 200, 200, 200, 200, 200]);
  const byBackend = answers.reduce((m, x) => m.set(x.backend, (m.get(x.backend) ?? 0) + 1), new Map<string | undefined, number>());
  // Four at once filled both backends (2 + 2); the last two waited for a slot.
  assert.ok((byBackend.get('b') ?? 0) >= 2, `b took its share while a was full: ${JSON.stringify([...byBackend])}`);
  assert.ok(a.requests + b.requests === 6);
});

test('a request that waits past the queue timeout gets 503 with Retry-After; a full queue refuses at once', async () => {
  const slow = await startBackend({ name: 'slow' });
  backends.push(slow);
  slow.delayMs = 3000;
  const url = await tandem({ backends: [{ name: 'slow', url: slow.url, maxConnections: 1 }], queue: { size: 1, timeout: '400ms' } });
  const holding = get(`${url}/hold`);
  // Let the first request take the only slot.
  while (slow.requests === 0) await new Promise((r) => setTimeout(r, 20));
  const t0 = performance.now();
  const [waited, refused] = await Promise.all([get(`${url}/wait`), (async () => {
    await new Promise((r) => setTimeout(r, 100));
    return get(`${url}/refused`);
  })()]);
  assert.equal(refused.status, 503);
  assert.match(refused.body, /TANDEM_ERR_QUEUE_FULL/);
  assert.equal(refused.retryAfter, '1');
  assert.equal(waited.status, 503);
  assert.match(waited.body, /TANDEM_ERR_QUEUE_TIMEOUT/);
  assert.equal(waited.retryAfter, '1');
  const ms = performance.now() - t0;
  assert.ok(ms >= 350 && ms < 2500, `gave up after the queue timeout (${ms.toFixed(0)} ms)`);
  assert.equal((await holding).status, 200);
  assert.equal(slow.requests, 1, 'neither waiting request reached the backend');
});

test('a route rate limit answers 429 with Retry-After once a client has used its burst', async () => {
  const b = await startBackend({ name: 'rl' });
  backends.push(b);
  const url = await tandem({ backends: [{ name: 'rl', url: b.url }] }, { rateLimit: { requests: 3, per: '10s' } });
  const statuses: number[] = [];
  let last: Awaited<ReturnType<typeof get>> | null = null;
  for (let i = 0; i < 5; i++) {
    last = await get(`${url}/x${i}`);
    statuses.push(last.status);
  }
  assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
  assert.match(last!.body, /TANDEM_ERR_RATE_LIMITED/);
  assert.ok(Number(last!.retryAfter) >= 1 && Number(last!.retryAfter) <= 4, `Retry-After ${last!.retryAfter}`);
  assert.equal(b.requests, 3);
});

test('the rate limiter refills over time and keeps at most `clients` addresses', () => {
  const rl = new RateLimiter({ requests: 2, per: 1000, burst: 2, clients: 100 });
  assert.equal(rl.take('a', 0), 0);
  assert.equal(rl.take('a', 0), 0);
  assert.equal(rl.take('a', 0), 1);
  assert.equal(rl.take('a', 499), 1, 'still short of a token');
  assert.equal(rl.take('a', 1000), 0, 'one token back after half the period');
  for (let i = 0; i < 10_000; i++) rl.take(`10.0.${i >> 8}.${i & 255}`, 2000);
  assert.equal(rl.size, 100);
  // 'a' was forgotten long ago: it starts with a full bucket.
  assert.equal(rl.take('a', 2000), 0);
  assert.equal(rl.take('a', 2000), 0);
});
