// What operators read from a real tandem process: each backend state's age and the
// downtime it adds up, a pool without health checks whose requests all fail shown as
// failing (not a green "up"), and the admin API's own errors in the one shape of
// tandem's answers, fastify's included (bad JSON, media type, body size, 405 with Allow).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { chromium } from 'playwright-core';
import { request } from 'undici';
import { until } from '../cluster/support.ts';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { config } from '../helpers/config.ts';
import { backgroundOf } from '../helpers/page.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';


let c: TestBackend;
let t: TandemProcess;
let deadUrl: string;

before(async () => {
  c = await startBackend({ name: 'c' });
  // A port nothing listens on: every request to it fails at the transport level.
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  deadUrl = `http://127.0.0.1:${(s.address() as net.AddressInfo).port}`;
  await new Promise<void>((r) => s.close(() => r()));
  t = await startTandem(config({
    routes: [
      { name: 'dead', match: { pathPrefix: '/dead' }, pool: 'dead' },
      { name: 'all', match: { pathPrefix: '/' }, pool: 'checked' },
    ],
    pools: {
      checked: { backends: [{ name: 'c', url: c.url }], healthCheck: { path: '/healthz', interval: '300ms', timeout: '250ms', rise: 1, fall: 1 } },
      dead: { backends: [{ name: 'gone', url: deadUrl }] },
    },
  }));
});

after(async () => {
  await t?.stop();
  await c?.close();
});

interface BackendView { name: string; state: string; shown: string; stateSince: number; downtimeMs: number; recentRequests: number; recentFailures: number }
interface StatusView { time: number; pools: { name: string; healthChecks: boolean; available: boolean; backends: BackendView[] }[] }

async function status(): Promise<StatusView> {
  return await (await fetch(`${t.admin}/api/v1/status`)).json() as StatusView;
}

async function backend(pool: string, name: string): Promise<BackendView & { time: number }> {
  const s = await status();
  return { ...s.pools.find((p) => p.name === pool)!.backends.find((b) => b.name === name)!, time: s.time };
}

describe('backend state age and downtime', () => {
  test('a backend that goes down shows since when, and its downtime adds up and stops when it is back', async () => {
    // (On a busy machine a check may time out now and then: wait for a passed one.)
    await until(async () => (await backend('checked', 'c')).state === 'up', 10_000, 'c to be up');
    const upAt = await backend('checked', 'c');
    assert.equal(upAt.shown, 'up', 'checked and healthy: a verified up');
    const downtimeBefore = upAt.downtimeMs;
    await c.stop();
    await until(async () => (await backend('checked', 'c')).state === 'down', 10_000, 'c to go down');
    const down = await backend('checked', 'c');
    assert.ok(down.stateSince > upAt.stateSince, 'a new state has a new since');
    assert.ok(down.time - down.stateSince < 10_000);
    await until(async () => (await backend('checked', 'c')).downtimeMs >= downtimeBefore + 300, 10_000, 'downtime to add up');
    await c.restart();
    await until(async () => (await backend('checked', 'c')).state === 'up', 10_000, 'c to come back');
    const back = await backend('checked', 'c');
    assert.ok(back.stateSince >= down.stateSince);
    assert.ok(back.downtimeMs >= downtimeBefore + 300, `downtime kept: ${back.downtimeMs}`);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await backend('checked', 'c')).downtimeMs, back.downtimeMs, 'no downtime counted while up');
  });
});

describe('a pool without health checks', () => {
  test('whose requests all fail shows its backend failing, not up, though nothing took it out', async () => {
    const idle = await backend('dead', 'gone');
    assert.equal(idle.state, 'up');
    assert.equal(idle.shown, 'unchecked', 'no check and no traffic: not verified');
    for (let i = 0; i < 6; i++) {
      const r = await request(`${t.url}/dead/${i}`);
      await r.body.text();
      assert.equal(r.statusCode, 502);
    }
    // The worker's counts reach the control plane about once a second.
    await until(async () => (await backend('dead', 'gone')).shown === 'failing', 10_000, 'the backend to show as failing');
    const failing = await backend('dead', 'gone');
    assert.equal(failing.state, 'up', 'the state machine is unchanged: nothing ejected it');
    assert.equal(failing.recentFailures, failing.recentRequests);
    assert.ok(failing.recentRequests >= 6);
    const pool = (await status()).pools.find((p) => p.name === 'dead')!;
    assert.equal(pool.healthChecks, false);
  });

  const CHROMIUM = '/usr/bin/chromium';
  const skip = skipUnlessCi(existsSync(CHROMIUM) ? null : `${CHROMIUM} is missing: install Debian's chromium package to run the status page test`);
  test('is drawn on the status page in the failing colour, not the green of a checked up', { skip }, async () => {
    await until(async () => (await backend('dead', 'gone')).shown === 'failing', 10_000, 'the backend to show as failing');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--no-first-run'] });
    try {
      const page = await browser.newPage();
      await page.goto(`${t.admin}/status`);
      const row = page.locator('tr[data-pool="dead"][data-backend="gone"][data-shown="failing"]');
      await row.waitFor({ timeout: 10_000 });
      assert.equal(await row.locator('td.state').textContent(), 'failing');
      await page.locator('tr[data-pool="checked"][data-backend="c"][data-shown="up"]').waitFor({ timeout: 10_000 });
      const failing = await backgroundOf(page, 'tr[data-backend="gone"] td');
      const up = await backgroundOf(page, 'tr[data-backend="c"] td');
      assert.equal(up, 'rgb(185, 236, 180)', 'a checked up backend is green');
      assert.equal(failing, 'rgb(247, 181, 138)');
      assert.match(await page.locator('table.pool[data-pool="dead"] caption').textContent() ?? '', /1 failing.*no health checks/);
      assert.match(await row.locator('td.since').textContent() ?? '', /^\d+(s|m\d\ds)$/);
    } finally {
      await browser.close();
    }
  });
});

describe('the admin API\'s own errors', () => {
  const post = (path: string, body: string, type = 'application/json') =>
    fetch(`${t.admin}${path}`, { method: 'POST', headers: { 'content-type': type }, body });

  test('a body that is not JSON gets 400 TANDEM_ERR_ADMIN_BAD_REQUEST in the shape of every tandem answer', async () => {
    const r = await post('/api/v1/pools/checked/backends/c/weight', '{"weight": 2');
    assert.equal(r.status, 400);
    assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
    const body = await r.json() as Record<string, string>;
    assert.deepEqual(Object.keys(body).sort(), ['code', 'error', 'message']);
    assert.equal(body.error, 'TANDEM_ERR_ADMIN_BAD_REQUEST');
    assert.match(body.message, /^the request body is not what this call takes: the body is not valid JSON/);
  });

  test('a wrong method on a known path gets 405 with Allow; an unknown path 404', async () => {
    const r = await fetch(`${t.admin}/api/v1/reload`);
    assert.equal(r.status, 405);
    assert.equal(r.headers.get('allow'), 'POST');
    assert.equal((await r.json() as { error: string }).error, 'TANDEM_ERR_ADMIN_METHOD_NOT_ALLOWED');
    const s = await fetch(`${t.admin}/api/v1/status`, { method: 'DELETE', headers: { 'content-type': 'application/json' } });
    assert.equal(s.status, 405);
    assert.equal(s.headers.get('allow'), 'GET, HEAD');
    const drain = await fetch(`${t.admin}/api/v1/pools/x/backends/y/drain`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(drain.status, 405);
    assert.equal(drain.headers.get('allow'), 'POST');
    const none = await fetch(`${t.admin}/api/v1/nothing`);
    assert.equal(none.status, 404);
    assert.equal((await none.json() as { error: string }).error, 'TANDEM_ERR_ADMIN_NOT_FOUND');
  });

  test('fastify\'s body size error comes as a catalogue code; without a token a non-JSON change is refused first', async () => {
    // Same-origin rules refuse a change without application/json (403) before any
    // parsing (with the token, fastify's 415 is mapped: see test/ctl.test.ts).
    const type = await post('/api/v1/reload', '{}', 'application/json-patch+json');
    assert.equal(type.status, 403);
    assert.equal((await type.json() as { error: string }).error, 'TANDEM_ERR_ADMIN_FORBIDDEN');
    const big = await post('/api/v1/reload', JSON.stringify({ pad: 'x'.repeat(1_100_000) }));
    assert.equal(big.status, 413);
    const bigBody = await big.json() as { error: string; message: string };
    assert.equal(bigBody.error, 'TANDEM_ERR_ADMIN_BODY_TOO_LARGE');
    assert.match(bigBody.message, /^the request body is too large: /);
  });
});
