import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createMetrics } from '../../src/admin/metrics.ts';
import { startAdmin } from '../../src/admin/server.ts';
import type { AdminServer } from '../../src/admin/server.ts';
import { errors } from '../../src/errors.ts';
import { startBackends, stopAll } from '../helpers/backends.ts';
import type { TestBackend } from '../helpers/backends.ts';
import { json, poolConfig, TestRuntime } from './helpers.ts';

describe('admin API', () => {
  let backends: TestBackend[];
  let runtime: TestRuntime;
  let admin: AdminServer;
  let base: string;

  before(async () => {
    backends = await startBackends(3, 'web');
    runtime = new TestRuntime([
      poolConfig('web', [backends[0].config({ weight: 3 }), backends[1].config()]),
      poolConfig('api', [backends[2].config({ backup: true })]),
    ], { node: 'lb1', leaseDurationMs: 900 });
    runtime.vipViews = [{ name: 'vip-a', address: '10.0.0.100/24', interface: 'eth0', state: 'MASTER', holder: 'lb1', epoch: 4, leaseRemainingMs: 700 }];
    admin = await startAdmin(runtime, createMetrics({ defaultMetrics: false }), { host: '127.0.0.1', port: 0, token: null, authReads: false });
    base = `http://${admin.address}`;
  });

  after(async () => {
    await admin.close();
    await runtime.close();
    await stopAll(backends);
  });

  it('binds where it was told and reports the bound address', () => {
    assert.match(admin.address, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(admin.address, '127.0.0.1:0');
  });

  it('answers /healthz with 200 while the process runs', async () => {
    const res = await fetch(`${base}/healthz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await json(res), { status: 'alive' });
  });

  it('is ready when every listener is bound and every pool has an available backend', async () => {
    const res = await fetch(`${base}/readyz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await json(res), { ready: true, reasons: [] });
  });

  it('is not ready, with the reason, while a pool has no available backend', async () => {
    const api = runtime.backend('api', 'web3');
    api.setHealthy(false, 'test: health check failed');
    try {
      const res = await fetch(`${base}/readyz`);
      assert.equal(res.status, 503);
      assert.deepEqual(await json(res), { ready: false, reasons: ['pool api has no available backend'] });
    } finally {
      api.setHealthy(true, 'test: back');
    }
    assert.equal((await fetch(`${base}/readyz`)).status, 200);
  });

  it('is not ready while a listener is not bound', async () => {
    runtime.listenerViews[0].bound = false;
    try {
      const res = await fetch(`${base}/readyz`);
      assert.equal(res.status, 503);
      assert.deepEqual((await json(res)).reasons, ['listener web (127.0.0.1:8080) is not bound']);
    } finally {
      runtime.listenerViews[0].bound = true;
    }
  });

  it('shows listeners, routes, pools with every backend, and VIPs in /api/v1/status', async () => {
    const b = runtime.backend('web', 'web1');
    b.active = 2;
    b.requests = 41;
    b.failures = 1;
    b.checksOk = 7;
    b.lastCheck = { time: 1_700_000_000_000, ok: true, latencyMs: 3, detail: '200' };
    runtime.backend('web', 'web2').setAdmin('draining', 'test');
    try {
      const res = await fetch(`${base}/api/v1/status`);
      assert.equal(res.status, 200);
      const s = await json(res);
      assert.equal(s.node, 'lb1');
      assert.equal(s.configFile, null, 'the config path is shown to token holders only');
      assert.deepEqual(s.listeners, [{ name: 'web', address: '127.0.0.1:8080', bound: true, connections: 0, events: {} }]);
      assert.deepEqual(s.routes.map((r: { name: string; pool: string; match: { hosts: string[] } }) => [r.name, r.pool, r.match.hosts]),
        [['to-web', 'web', ['web.example.com']], ['to-api', 'api', ['api.example.com']]]);
      assert.deepEqual(s.pools.map((p: { name: string }) => p.name), ['web', 'api']);
      const web = s.pools[0];
      assert.equal(web.available, true);
      assert.equal(web.active, 2);
      const { stateSince, downtimeMs, ...rest } = web.backends[0];
      assert.deepEqual(rest, {
        name: 'web1', url: backends[0].url, backup: false, state: 'up', admin: 'enabled', healthy: true, ejected: false,
        // No active health checks in this pool: up, but not verified.
        shown: 'unchecked',
        weight: 3, runtimeWeight: null, effectiveWeight: 3, active: 2, requests: 41, failures: 1,
        recentRequests: 0, recentFailures: 0, checksOk: 7, checksFailed: 0,
        lastCheck: { time: 1_700_000_000_000, ok: true, latencyMs: 3, detail: '200' },
      });
      assert.ok(stateSince <= s.time && s.time - stateSince < 60_000, `stateSince ${stateSince} is when the backend was made`);
      assert.equal(downtimeMs, 0);
      assert.equal(web.healthChecks, false);
      assert.equal(web.backends[1].state, 'draining');
      assert.equal(s.pools[1].backends[0].backup, true);
      assert.deepEqual(s.vips, runtime.vipViews);
    } finally {
      b.active = 0;
      runtime.backend('web', 'web2').setAdmin('enabled', 'test');
    }
  });

  it('drains, disables and enables a backend through the API', async () => {
    const b = runtime.backend('web', 'web2');
    const post = async (action: string) => {
      const res = await fetch(`${base}/api/v1/pools/web/backends/web2/${action}`, { method: 'POST', headers: { 'content-type': 'application/json' } });
      assert.equal(res.status, 200);
      return json(res);
    };
    assert.deepEqual(await post('drain'), { pool: 'web', backend: 'web2', admin: 'draining', state: 'draining' });
    assert.equal(b.state(), 'draining');
    assert.equal(b.isAvailable(), false);
    assert.deepEqual(await post('disable'), { pool: 'web', backend: 'web2', admin: 'disabled', state: 'disabled' });
    assert.equal(b.state(), 'disabled');
    assert.deepEqual(await post('enable'), { pool: 'web', backend: 'web2', admin: 'enabled', state: 'up' });
    assert.equal(b.isAvailable(), true);
  });

  it('answers 404 with the catalogue code for an unknown pool or backend', async () => {
    for (const path of ['/api/v1/pools/nope/backends/web1/drain', '/api/v1/pools/web/backends/nope/disable']) {
      const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' } });
      assert.equal(res.status, 404);
      const body = await json(res);
      assert.equal(body.code, errors.ADMIN_NOT_FOUND.code);
      assert.match(body.message, /nope/);
    }
    assert.equal(runtime.backend('web', 'web1').state(), 'up');
  });

  it('reloads through the runtime and answers 200 on success', async () => {
    runtime.nextReload = { ok: true, errors: [] };
    const before = runtime.reloads;
    const res = await fetch(`${base}/api/v1/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(res.status, 200);
    assert.deepEqual(await json(res), { ok: true, errors: [] });
    assert.equal(runtime.reloads, before + 1);
  });

  it('answers a rejected reload with 400 and the FILE:LINE:COL errors', async () => {
    const lines = ['/etc/tandem/test.yaml:7:5: pools.web.backends[0].weight: must be an integer from 0 to 1000'];
    runtime.nextReload = { ok: false, errors: lines };
    try {
      const res = await fetch(`${base}/api/v1/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
      assert.equal(res.status, 400);
      const body = await json(res);
      assert.equal(body.code, errors.RELOAD_FAILED.code);
      assert.deepEqual(body.errors, lines);
    } finally {
      runtime.nextReload = { ok: true, errors: [] };
    }
  });

  it('releases a known VIP and answers 404 for an unknown one', async () => {
    const ok = await fetch(`${base}/api/v1/vips/vip-a/release`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(ok.status, 200);
    assert.deepEqual(await json(ok), { vip: 'vip-a', released: true });
    assert.equal(runtime.vipViews[0].state, 'BACKUP');
    const missing = await fetch(`${base}/api/v1/vips/vip-z/release`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    assert.equal(missing.status, 404);
    assert.equal((await json(missing)).code, errors.ADMIN_NOT_FOUND.code);
  });

  it('answers unknown paths with 404 and the catalogue code', async () => {
    const res = await fetch(`${base}/api/v1/nothing-here`);
    assert.equal(res.status, 404);
    assert.equal((await json(res)).code, errors.ADMIN_NOT_FOUND.code);
  });

  it('serves the status page and its assets with a strict content security policy', async () => {
    const page = await fetch(`${base}/status`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    assert.match(await page.text(), /<script src="\/status\/app.js" defer><\/script>/);
    const js = await fetch(`${base}/status/app.js`);
    assert.match(js.headers.get('content-type') ?? '', /^text\/javascript/);
    assert.match(await js.text(), /\/api\/v1\/events/);
    const css = await fetch(`${base}/status/style.css`);
    assert.match(css.headers.get('content-type') ?? '', /^text\/css/);
    await css.text();
    const root = await fetch(`${base}/`, { redirect: 'manual' });
    assert.equal(root.status, 302);
    assert.equal(root.headers.get('location'), '/status');
  });

  it('serves Prometheus text on /metrics', async () => {
    const res = await fetch(`${base}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    assert.match(await res.text(), /^tandem_backend_up\{pool="web",backend="web1"\} 1$/m);
  });
});
