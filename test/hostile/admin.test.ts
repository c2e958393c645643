// The admin API as a hostile web page would drive it: without a token, requests that a
// browser sends for a foreign page (a form post, a no-body fetch, a rebound DNS name)
// are refused; wrong tokens are rate-limited; the config path is for token holders.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'undici';
import { createMetrics } from '../../src/admin/metrics.ts';
import { startAdmin, type AdminServer } from '../../src/admin/server.ts';
import { startBackends, stopAll, type TestBackend } from '../helpers/backends.ts';
import { poolConfig, TestRuntime } from '../admin/helpers.ts';

const TOKEN = 'a-long-enough-admin-token';
let backends: TestBackend[];
let runtime: TestRuntime;
let open: AdminServer;
let locked: AdminServer;

before(async () => {
  backends = await startBackends(1, 'web');
  runtime = new TestRuntime([poolConfig('web', [backends[0].config()])]);
  open = await startAdmin(runtime, createMetrics({ defaultMetrics: false }), { host: '127.0.0.1', port: 0, token: null, authReads: false });
  locked = await startAdmin(runtime, createMetrics({ defaultMetrics: false }), { host: '127.0.0.1', port: 0, token: TOKEN, authReads: false });
});
after(async () => {
  await open.close();
  await locked.close();
  await runtime.close();
  await stopAll(backends);
});

async function call(admin: AdminServer, method: string, path: string, headers: Record<string, string> = {}, body?: string) {
  const r = await request(`http://${admin.address}${path}`, { method: method as 'GET', headers, body });
  const text = await r.body.text();
  return { status: r.statusCode, text, retryAfter: r.headers['retry-after'] };
}

const DRAIN = '/api/v1/pools/web/backends/web1/drain';

describe('without a token', () => {
  const refused: [string, Record<string, string>, string | undefined][] = [
    ['a form post from another site', { origin: 'http://evil.example', 'content-type': 'application/x-www-form-urlencoded' }, 'a=1'],
    ['a text/plain post from another site', { origin: 'http://evil.example', 'content-type': 'text/plain' }, 'x'],
    ['a no-body post from another site', { origin: 'http://evil.example' }, undefined],
    ['a JSON post from another site', { origin: 'http://evil.example', 'content-type': 'application/json' }, '{}'],
    ['a no-body post without Origin (an old browser\'s form)', {}, undefined],
    ['a text/plain post without Origin', { 'content-type': 'text/plain' }, 'x'],
    ['a JSON post to a rebound name', { host: 'evil.example:9901', origin: 'http://evil.example:9901', 'content-type': 'application/json' }, '{}'],
  ];
  for (const [name, headers, body] of refused) {
    test(`refuses ${name}, and nothing changes`, async () => {
      const r = await call(open, 'POST', DRAIN, headers, body);
      assert.equal(r.status, 403, r.text);
      assert.match(r.text, /TANDEM_ERR_ADMIN_FORBIDDEN/);
      assert.equal(runtime.backend('web', 'web1').state(), 'up');
    });
  }

  test('refuses a reload posted by a foreign page', async () => {
    const before = runtime.reloads;
    const r = await call(open, 'POST', '/api/v1/reload', { origin: 'http://evil.example', 'content-type': 'text/plain' }, '');
    assert.equal(r.status, 403);
    assert.equal(runtime.reloads, before);
  });

  test('refuses a read under a rebound name', async () => {
    const r = await call(open, 'GET', '/api/v1/status', { host: 'evil.example:9901' });
    assert.equal(r.status, 403);
    assert.doesNotMatch(r.text, /tandem\.yaml/);
  });

  test('serves a same-origin JSON change, and reads by loopback names, without the config path', async () => {
    const port = open.address.split(':').pop();
    const r = await call(open, 'POST', DRAIN, { origin: `http://127.0.0.1:${port}`, 'content-type': 'application/json' });
    assert.equal(r.status, 200, r.text);
    assert.equal(runtime.backend('web', 'web1').state(), 'draining');
    assert.equal((await call(open, 'POST', '/api/v1/pools/web/backends/web1/enable', { 'content-type': 'application/json' }, '{}')).status, 200);
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, 'localhost:8080']) {
      const s = await call(open, 'GET', '/api/v1/status', { host });
      assert.equal(s.status, 200, host);
      assert.equal(JSON.parse(s.text).configFile, null);
    }
  });
});

describe('with a token', () => {
  test('the config path is shown with the token only', async () => {
    assert.equal(JSON.parse((await call(locked, 'GET', '/api/v1/status')).text).configFile, null);
    const s = await call(locked, 'GET', '/api/v1/status', { authorization: `Bearer ${TOKEN}` });
    assert.equal(JSON.parse(s.text).configFile, '/etc/tandem/test.yaml');
  });

  test('wrong tokens are rate-limited per address: after 10, even the right one waits', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push((await call(locked, 'POST', DRAIN, { authorization: `Bearer guess-${i}` })).status);
    assert.deepEqual(statuses.slice(0, 10), Array(10).fill(401));
    assert.deepEqual(statuses.slice(10), Array(20).fill(429));
    const right = await call(locked, 'POST', DRAIN, { authorization: `Bearer ${TOKEN}` });
    assert.equal(right.status, 429, 'a locked-out address gets no answer about any token');
    assert.ok(Number(right.retryAfter) >= 1);
    assert.equal(runtime.backend('web', 'web1').state(), 'up');
  });
});
