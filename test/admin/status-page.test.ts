// The status page in real headless Chromium (Debian's `chromium` package): a backend
// that really stops answering turns its row red without the page being reloaded.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import type { Browser } from 'playwright-core';
import { createMetrics } from '../../src/admin/metrics.ts';
import { startAdmin } from '../../src/admin/server.ts';
import type { AdminServer } from '../../src/admin/server.ts';
import { startPoolHealth } from '../../src/pool/health/index.ts';
import type { PoolHealth } from '../../src/pool/health/index.ts';
import { startBackends, stopAll } from '../helpers/backends.ts';
import type { TestBackend } from '../helpers/backends.ts';
import { poolConfig, quickChecks, TestRuntime } from './helpers.ts';
import { backgroundOf } from '../helpers/page.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';


const CHROMIUM = '/usr/bin/chromium';
const skip = skipUnlessCi(existsSync(CHROMIUM) ? null : `${CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium) to run the status page test`);

describe('status page in headless Chromium', { skip }, () => {
  let backends: TestBackend[];
  let runtime: TestRuntime;
  let health: PoolHealth[];
  let admin: AdminServer;
  let browser: Browser;

  before(async () => {
    backends = await startBackends(3, 'web');
    runtime = new TestRuntime([
      poolConfig('web', [backends[0].config({ weight: 3 }), backends[1].config()], { healthCheck: quickChecks(100) }),
      poolConfig('api', [backends[2].config({ backup: true })], { healthCheck: quickChecks(100) }),
    ], { node: 'lb1', leaseDurationMs: 900 });
    runtime.vipViews = [{ name: 'vip-a', address: '10.0.0.100/24', interface: 'eth0', state: 'MASTER', holder: 'lb1', epoch: 2, leaseRemainingMs: 800 }];
    health = Array.from(runtime.pools().values(), (p) => startPoolHealth(p));
    admin = await startAdmin(runtime, createMetrics({ defaultMetrics: false }), { host: '127.0.0.1', port: 0, token: null, authReads: false });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    });
  });

  after(async () => {
    await browser?.close();
    await admin?.close();
    await Promise.all((health ?? []).map((h) => h.stop()));
    await runtime?.close();
    await stopAll(backends ?? []);
  });

  it('turns a backend row down without a reload when the backend stops, and saves a screenshot', async (t) => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
    const problems: string[] = [];
    page.on('pageerror', (err) => problems.push(err.message));
    page.on('console', (msg) => { if (msg.type() === 'error') problems.push(msg.text()); });

    await page.goto(`http://${admin.address}/status`);
    const row = page.locator('tr[data-pool="web"][data-backend="web2"]');
    await row.and(page.locator('[data-state="up"]')).waitFor({ timeout: 5000 });
    await page.locator('#live.on').waitFor({ timeout: 5000 });
    assert.equal(await page.locator('tr[data-vip="vip-a"] td.state').textContent(), 'MASTER');
    assert.equal(await page.locator('table.pool').count(), 2);
    // A mark that a reload of the page would wipe out.
    await page.evaluate(() => { (globalThis as unknown as { mark: number }).mark = 42; });

    await backends[1].stop();
    await row.and(page.locator('[data-state="down"]')).waitFor({ timeout: 5000 });
    assert.equal(runtime.backend('web', 'web2').state(), 'down');
    assert.equal(await page.evaluate(() => (globalThis as unknown as { mark?: number }).mark), 42, 'the page was not reloaded');
    assert.equal(await row.locator('td.state').textContent(), 'down');
    // Red at a glance: the row's cells take the `down` colour.
    const background = (selector: string) => backgroundOf(page, selector);
    const down = await background('tr[data-pool="web"][data-backend="web2"] td');
    const up = await background('tr[data-pool="web"][data-backend="web1"] td');
    assert.equal(down, 'rgb(244, 166, 166)');
    assert.notEqual(down, up);

    const dir = await mkdtemp(join(tmpdir(), 'tandem-status-page-'));
    const shot = join(dir, 'status.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok((await stat(shot)).size > 1000);
    t.diagnostic(`screenshot: ${shot}`);

    await backends[1].restart();
    await row.and(page.locator('[data-state="up"]')).waitFor({ timeout: 5000 });
    assert.deepEqual(problems, []);
    await page.close();
  });

  it('drains a backend from its row with the page\'s own button', async () => {
    const page = await browser.newPage();
    await page.goto(`http://${admin.address}/status`);
    const row = page.locator('tr[data-pool="web"][data-backend="web1"]');
    await row.and(page.locator('[data-state="up"]')).waitFor({ timeout: 5000 });
    await row.locator('button', { hasText: 'drain' }).click();
    await row.and(page.locator('[data-state="draining"]')).waitFor({ timeout: 5000 });
    assert.equal(runtime.backend('web', 'web1').state(), 'draining');
    await row.locator('button', { hasText: 'enable' }).click();
    await row.and(page.locator('[data-state="up"]')).waitFor({ timeout: 5000 });
    await page.close();
  });
});
