import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isLoopback, TokenCheck } from '../../src/admin/auth.ts';
import { createMetrics } from '../../src/admin/metrics.ts';
import { startAdmin } from '../../src/admin/server.ts';
import type { AdminServer } from '../../src/admin/server.ts';
import { errors, TandemError } from '../../src/errors.ts';
import { startBackends, stopAll } from '../helpers/backends.ts';
import type { TestBackend } from '../helpers/backends.ts';
import { json, poolConfig, SseClient, TestRuntime } from './helpers.ts';

const TOKEN = 's3cret-token-with-some-length';

describe('admin authentication', () => {
  let backends: TestBackend[];
  let runtime: TestRuntime;
  let writesOnly: AdminServer;
  let everything: AdminServer;

  before(async () => {
    backends = await startBackends(1, 'web');
    runtime = new TestRuntime([poolConfig('web', [backends[0].config()])]);
    writesOnly = await startAdmin(runtime, createMetrics({ defaultMetrics: false }), { host: '127.0.0.1', port: 0, token: TOKEN, authReads: false });
    everything = await startAdmin(runtime, createMetrics({ defaultMetrics: false }), { host: '127.0.0.1', port: 0, token: TOKEN, authReads: true });
  });

  after(async () => {
    await writesOnly.close();
    await everything.close();
    await runtime.close();
    await stopAll(backends);
  });

  const drain = (admin: AdminServer, authorization?: string) => fetch(`http://${admin.address}/api/v1/pools/web/backends/web1/drain`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(authorization === undefined ? {} : { authorization }) },
  });

  it('refuses a mutating call without a token with 401 and the catalogue code', async () => {
    const res = await drain(writesOnly);
    assert.equal(res.status, 401);
    assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="tandem"');
    assert.equal((await json(res)).code, errors.ADMIN_UNAUTHORIZED.code);
    assert.equal(runtime.backend('web', 'web1').state(), 'up');
  });

  it('refuses a wrong token, a token of another length, and another scheme', async () => {
    for (const header of [`Bearer ${TOKEN.slice(0, -1)}x`, 'Bearer short', `Bearer ${TOKEN}${TOKEN}`, `Basic ${TOKEN}`, TOKEN, 'Bearer ']) {
      const res = await drain(writesOnly, header);
      assert.equal(res.status, 401, header);
      await res.body?.cancel();
    }
    assert.equal(runtime.backend('web', 'web1').state(), 'up');
  });

  it('accepts the right token, whatever the case of the scheme', async () => {
    const res = await drain(writesOnly, `bearer ${TOKEN}`);
    assert.equal(res.status, 200);
    assert.equal(runtime.backend('web', 'web1').state(), 'draining');
    const back = await fetch(`http://${writesOnly.address}/api/v1/pools/web/backends/web1/enable`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(back.status, 200);
    assert.equal(runtime.backend('web', 'web1').state(), 'up');
  });

  it('protects reload and VIP release like every other mutating call', async () => {
    const before = runtime.reloads;
    for (const path of ['/api/v1/reload', '/api/v1/vips/vip-a/release']) {
      const res = await fetch(`http://${writesOnly.address}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' } });
      assert.equal(res.status, 401, path);
      await res.body?.cancel();
    }
    assert.equal(runtime.reloads, before);
  });

  it('lets anyone read when reads are not protected', async () => {
    for (const path of ['/api/v1/status', '/metrics', '/readyz']) {
      const res = await fetch(`http://${writesOnly.address}${path}`);
      assert.equal(res.status, 200, path);
      await res.body?.cancel();
    }
  });

  it('asks for the token on reads, the event stream included, when reads are protected', async () => {
    for (const path of ['/api/v1/status', '/metrics', '/api/v1/events']) {
      const res = await fetch(`http://${everything.address}${path}`);
      assert.equal(res.status, 401, path);
      assert.equal((await json(res)).code, errors.ADMIN_UNAUTHORIZED.code);
    }
    const ok = await fetch(`http://${everything.address}/api/v1/status`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    const stream = await SseClient.connect(`http://${everything.address}/api/v1/events`, { authorization: `Bearer ${TOKEN}` });
    assert.equal(stream.response?.statusCode, 200);
    await stream.waitFor((e) => e.event === 'backend');
    stream.close();
  });

  it('keeps the probes and the status page shell open when reads are protected', async () => {
    for (const path of ['/healthz', '/readyz', '/status', '/status/app.js', '/status/style.css']) {
      const res = await fetch(`http://${everything.address}${path}`);
      assert.equal(res.status, 200, path);
      await res.body?.cancel();
    }
  });

  it('refuses to start on a non-loopback address without a token', async () => {
    for (const host of ['0.0.0.0', '::', '192.0.2.10']) {
      await assert.rejects(
        startAdmin(runtime, createMetrics({ defaultMetrics: false }), { host, port: 0, token: null, authReads: false }),
        (err: unknown) => err instanceof TandemError && err.code === errors.CONFIG_INVALID.code && err.message.includes('admin.token'),
        host,
      );
    }
  });

  it('starts on a loopback address without a token and lets same-origin JSON calls through', async () => {
    const open = await startAdmin(runtime, createMetrics({ defaultMetrics: false }), { host: '127.0.0.1', port: 0, token: null, authReads: false });
    try {
      const res = await drain(open);
      assert.equal(res.status, 200);
      await res.body?.cancel();
    } finally {
      runtime.backend('web', 'web1').setAdmin('enabled', 'test');
      await open.close();
    }
  });
});

describe('token comparison and loopback detection', () => {
  it('accepts exactly the configured token', () => {
    const check = new TokenCheck('abc');
    assert.equal(check.allows('Bearer abc'), true);
    assert.equal(check.allows('Bearer abd'), false);
    assert.equal(check.allows('Bearer abcd'), false);
    assert.equal(check.allows(undefined), false);
    assert.equal(new TokenCheck(null).allows(undefined), true);
  });

  it('counts 127.0.0.0/8, ::1 and localhost as loopback and nothing else', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost', '::ffff:127.0.0.1']) assert.equal(isLoopback(h), true, h);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'example.com', '::ffff:10.0.0.1']) assert.equal(isLoopback(h), false, h);
  });
});
