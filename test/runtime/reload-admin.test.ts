// A reload applies every section it accepts, through a real tandem process: a new admin
// token is the only one that works at once, authReads takes effect, a new admin address
// is bound before the old one closes, and a key only a restart can change refuses the
// reload whole (400 naming the key) instead of being ignored.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { SseClient } from '../admin/helpers.ts';
import { TestCa } from '../helpers/certs.ts';
import { until } from '../cluster/support.ts';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { config, singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { differences, restartOnly } from '../../src/control/reload-scope.ts';
import type { Config } from '../../src/config/types.ts';

const backends: TestBackend[] = [];
const procs: TandemProcess[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(backends.map((b) => b.close()));
});

const OLD = 'the-old-token-0123456789';
const NEW = 'the-new-token-9876543210';

async function instance(admin: Record<string, unknown>, extra: Record<string, unknown> = {}, args: string[] = []) {
  const a = await startBackend({ name: 'a' });
  backends.push(a);
  const conf = (adm: Record<string, unknown>, more: Record<string, unknown> = {}) =>
    singlePool([{ name: 'a', url: a.url }], {}, { admin: { address: '127.0.0.1:0', ...adm }, ...extra, ...more });
  const t = await startTandem(conf(admin), { args });
  procs.push(t);
  return { t, conf };
}

/** POST enable of backend `a` (a change: it always needs the token) with `token`; the status code. */
async function change(base: string, token: string | null): Promise<number> {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const r = await fetch(`${base}/api/v1/pools/web/backends/a/enable`, { method: 'POST', headers, body: '{}' });
  await r.body?.cancel();
  return r.status;
}

async function reloadByApi(base: string, token: string | null) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const r = await fetch(`${base}/api/v1/reload`, { method: 'POST', headers, body: '{}' });
  return { status: r.status, body: await r.json() as { ok?: boolean; error?: string; code?: string; message?: string; errors?: string[] } };
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe('reload of the admin section', () => {
  test('SIGHUP with a rotated token: the new token works and the old one is refused at once', async () => {
    const { t, conf } = await instance({ token: OLD });
    assert.equal(await change(t.admin!, OLD), 200);
    assert.equal(await change(t.admin!, NEW), 401);
    const from = t.output().length;
    assert.equal(await t.reload(conf({ token: NEW })), 'reloaded');
    await t.waitForLog(/admin: the reload changed token"/, { from });
    assert.ok(!t.output().includes(NEW), 'the token itself is never logged');
    assert.equal(await change(t.admin!, NEW), 200, 'the new token works');
    assert.equal(await change(t.admin!, OLD), 401, 'the old token is refused');
  });

  test('POST /api/v1/reload with a rotated token: answered ok, then only the new token works, and streams opened with the old one end', async () => {
    const { t, conf } = await instance({ token: OLD, authReads: true });
    const stream = await SseClient.connect(`${t.admin}/api/v1/events`, { authorization: `Bearer ${OLD}` });
    await stream.waitFor((e) => e.event === 'backend');
    writeFileSync(t.file, conf({ token: NEW, authReads: true }));
    const r = await reloadByApi(t.admin!, OLD);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(await change(t.admin!, NEW), 200);
    assert.equal(await change(t.admin!, OLD), 401);
    assert.equal((await reloadByApi(t.admin!, OLD)).status, 401, 'not even a reload with the old one');
    await stream.waitForEnd(10_000);
    const again = await SseClient.connect(`${t.admin}/api/v1/events`, { authorization: `Bearer ${OLD}` });
    assert.equal(again.response?.statusCode, 401, 'a stream cannot be reopened with the old token');
    again.close();
  });

  test('adding the admin section starts the admin API; removing it stops it', async () => {
    const a = await startBackend({ name: 'a' });
    backends.push(a);
    const plain = singlePool([{ name: 'a', url: a.url }], {}, { admin: false });
    const t = await startTandem(plain);
    procs.push(t);
    assert.equal(t.admin, null);
    const port = await freePort();
    const from = t.output().length;
    assert.equal(await t.reload(singlePool([{ name: 'a', url: a.url }], {}, { admin: { address: `127.0.0.1:${port}` } })), 'reloaded');
    await t.waitForLog(new RegExp(`admin on http://127\\.0\\.0\\.1:${port}`), { from });
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    assert.equal(await t.reload(plain), 'reloaded');
    await t.waitForLog(/admin API stopped/, { from });
    await until(async () => (await fetch(`http://127.0.0.1:${port}/healthz`).then(() => false, () => true)), 10_000, 'the admin API to stop');
  });

  test('authReads set by a reload makes reads need the token at once, and unset lets them through again', async () => {
    const { t, conf } = await instance({ token: OLD });
    assert.equal((await fetch(`${t.admin}/api/v1/status`)).status, 200, 'reads are open without authReads');
    assert.equal(await t.reload(conf({ token: OLD, authReads: true })), 'reloaded');
    const refused = await fetch(`${t.admin}/api/v1/status`);
    assert.equal(refused.status, 401);
    assert.equal((await refused.json() as { error: string }).error, 'TANDEM_ERR_ADMIN_UNAUTHORIZED');
    assert.equal((await fetch(`${t.admin}/api/v1/status`, { headers: { authorization: `Bearer ${OLD}` } })).status, 200);
    assert.equal(await t.reload(conf({ token: OLD, authReads: false })), 'reloaded');
    assert.equal((await fetch(`${t.admin}/api/v1/status`)).status, 200);
  });

  test('a new admin address is bound and serves; the old one closes; a taken address refuses the reload and keeps the old one', async () => {
    const { t, conf } = await instance({});
    const port = await freePort();
    writeFileSync(t.file, conf({ address: `127.0.0.1:${port}` }));
    const from = t.output().length;
    const r = await reloadByApi(t.admin!, null);
    assert.equal(r.status, 200, `the reload asked on the old address is answered: ${JSON.stringify(r.body)}`);
    await t.waitForLog(new RegExp(`admin on http://127\\.0\\.0\\.1:${port}`), { from });
    const moved = `http://127.0.0.1:${port}`;
    assert.equal((await fetch(`${moved}/healthz`)).status, 200, 'the new address serves');
    await until(async () => (await fetch(`${t.admin}/healthz`).then(() => false, () => true)), 10_000, 'the old admin address to close');

    // A port another process holds: the reload is refused and the running admin API stays.
    const squatter = net.createServer();
    await new Promise<void>((res) => squatter.listen(0, '127.0.0.1', res));
    try {
      const taken = (squatter.address() as net.AddressInfo).port;
      writeFileSync(t.file, conf({ address: `127.0.0.1:${taken}` }));
      const refused = await reloadByApi(moved, null);
      assert.equal(refused.status, 400);
      assert.equal(refused.body.error, 'TANDEM_ERR_RELOAD_FAILED');
      assert.match(refused.body.errors!.join('\n'), new RegExp(`admin: .*127\\.0\\.0\\.1:${taken}.*the running admin API is kept`));
      assert.equal((await fetch(`${moved}/healthz`)).status, 200, 'the running admin API still serves');
    } finally {
      squatter.close();
    }
  });
});

describe('keys only a restart can change', () => {
  test('workers changed in the file while --workers fixes them is refused with 400 naming workers, by API and by SIGHUP, and the old config runs on', async () => {
    const { t, conf } = await instance({}, {}, ['--workers', '1']);
    writeFileSync(t.file, conf({}, { workers: 2 }));
    const r = await reloadByApi(t.admin!, null);
    assert.equal(r.status, 400);
    assert.equal(r.body.error, 'TANDEM_ERR_RELOAD_FAILED');
    assert.equal(r.body.code, r.body.error, 'the older key says the same');
    assert.match(r.body.errors!.join('\n'), /tandem\.yaml: workers: 1 to 2, but --workers given at start fixes the number of worker processes; restart tandem to change it/);
    const logged = await t.reload(conf({}, { workers: 2 }));
    assert.match(logged, /reload rejected/);
    assert.match(t.output(), /reload rejected \(SIGHUP\)[^\n]*workers: 1 to 2/);
    assert.equal((await fetch(`${t.url}/`)).status, 200, 'traffic goes on with the running config');
    assert.equal(t.workerPids().length, 1, 'still one worker');
  });

  test('every changed ha key is named, values never shown, and nothing is refused where HA does not run', () => {
    const base = { file: '/etc/tandem.yaml', workers: 1 } as unknown as Config;
    const ha = (secret: string, lease: number, prio: number) => ({
      store: 'peer', secret, leaseDuration: lease, vips: [{ name: 'vip-a', priority: { lb1: prio } }],
    });
    const running = { ...base, ha: ha('s3cret-one', 3000, 100) } as unknown as Config;
    const next = { ...base, ha: ha('s3cret-two', 5000, 50) } as unknown as Config;
    const shape = { workersFixed: false, haRuns: true };
    const lines = restartOnly(running, next, shape);
    assert.deepEqual(lines.map((l) => l.split(': ')[1]), ['ha.secret', 'ha.leaseDuration', 'ha.vips[0].priority.lb1']);
    assert.ok(!lines.join('\n').includes('s3cret'), 'no secret in the answer');
    assert.deepEqual(restartOnly(running, next, { ...shape, haRuns: false }), []);
    assert.deepEqual(restartOnly(running, { ...running, ha: null } as Config, shape).map((l) => l.split(': ')[1]), ['ha']);
    assert.deepEqual(differences({ a: [1, 2] }, { a: [1, 2, 3] }, 'x'), ['x.a']);
    // Without --workers the file's workers follow a reload.
    assert.deepEqual(restartOnly({ ...base, ha: null } as Config, { ...base, workers: 3, ha: null } as Config, shape), []);
  });
});

describe('reload of what servers and connections were built with', () => {
  test('a smaller maxHeaderSize applies to the running listener; turning http2 on binds a new server that speaks it', async () => {
    const a = await startBackend({ name: 'a' });
    backends.push(a);
    // A fixed port: a new server for the same address is bound beside the running one.
    const address = `127.0.0.1:${await freePort()}`;
    const conf = (listener: Record<string, unknown>) => singlePool([{ name: 'a', url: a.url }], {}, { listeners: [{ name: 'web', address, ...listener }] });
    const t = await startTandem(conf({}));
    procs.push(t);
    const big = { 'x-big': 'a'.repeat(4000) };
    // Each on a new connection: the limit is set on a connection when it is accepted.
    const fresh = () => request(`${t.url}/`, { headers: big, reset: true, dispatcher: new Agent() });
    assert.equal((await fresh()).statusCode, 200);
    assert.equal(await t.reload(conf({ maxHeaderSize: 2048 })), 'reloaded');
    const r = await fresh();
    assert.equal(r.statusCode, 431);
    assert.equal((await r.body.json() as { error: string }).error, 'TANDEM_ERR_HEADERS_TOO_LARGE');

    assert.equal(await t.reload(conf({ http2: true })), 'reloaded');
    const session = h2connect(t.url);
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = session.request({ ':path': '/' });
        req.on('response', (h) => resolve(Number(h[':status'])));
        req.on('error', reject);
        req.resume();
        req.end();
      });
      assert.equal(status, 200, 'h2c with prior knowledge after the reload');
    } finally {
      session.close();
    }
  });

  test('a renewed upstream CA file at the same path is read by a reload: new connections use it', async () => {
    const right = new TestCa('right CA');
    const wrong = new TestCa('wrong CA');
    const leaf = right.issue('backend.test', ['IP:127.0.0.1']);
    const server = createHttpsServer({ cert: readFileSync(leaf.cert), key: readFileSync(leaf.key) }, (_req, res) => res.end('tls ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as net.AddressInfo).port;
      const caFile = join(wrong.dir, 'upstream-ca.pem');
      copyFileSync(wrong.cert, caFile);
      const text = config({
        routes: [{ name: 'all', match: { pathPrefix: '/' }, pool: 'secure' }],
        pools: { secure: { backends: [{ name: 's', url: `https://127.0.0.1:${port}` }], tls: { ca: caFile } } },
      });
      const t = await startTandem(text);
      procs.push(t);
      const before = await request(`${t.url}/`);
      await before.body.text();
      assert.equal(before.statusCode, 502, 'the backend\'s certificate does not chain to the configured CA');
      copyFileSync(right.cert, caFile);
      assert.equal(await t.reload(text), 'reloaded');
      const after = await request(`${t.url}/`);
      assert.equal(after.statusCode, 200);
      assert.equal(await after.body.text(), 'tls ok');
    } finally {
      server.close();
    }
  });
});
