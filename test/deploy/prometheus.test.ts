// A real Prometheus on loopback scrapes a real tandem with the alerting rules of
// deploy/prometheus/alerts.yaml loaded: every query of the Grafana dashboard runs
// through its query API (with Grafana's variables filled in), the ones a dashboard
// needs from the first minute return data, and every rule evaluates without error.

import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { config } from '../helpers/config.ts';
import { run } from '../helpers/netns.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { ROOT } from './pack.ts';

const missing = (await run('sh', ['-c', 'command -v prometheus'])).code === 0 ? null : 'prometheus is not installed (apt-get install prometheus)';
const noPrometheus = skipUnlessCi(missing);

interface QueryAnswer { status: string; error?: string; data: { result: unknown[] } }

async function freePort(): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function until<T>(what: string, ms: number, check: () => Promise<T | null>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const got = await check().catch(() => null);
    if (got !== null) return got;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('the dashboard and the alerts against a real Prometheus scraping tandem', { skip: noPrometheus }, () => {
  let backend: Server;
  let t: TandemProcess;
  let prometheus: ChildProcess | null = null;
  let dir = '';
  let api = '';
  let promOutput = '';

  const query = async (expr: string): Promise<QueryAnswer> => {
    const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`);
    return await res.json() as QueryAnswer;
  };

  before(async () => {
    backend = createServer((req, res) => {
      req.resume();
      res.end('ok');
    }).listen(0, '127.0.0.1');
    await once(backend, 'listening');
    const url = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
    t = await startTandem(config({
      workers: 2,
      routes: [{ name: 'all', match: { pathPrefix: '/' }, pool: 'web' }],
      pools: { web: { backends: [{ name: 'app1', url }], healthCheck: { path: '/', interval: '500ms', timeout: '400ms' } } },
    }));

    dir = await mkdtemp(join(tmpdir(), 'tandem-prometheus-'));
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    await writeFile(join(dir, 'prometheus.yml'), stringify({
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      rule_files: [join(ROOT, 'deploy/prometheus/alerts.yaml')],
      scrape_configs: [{ job_name: 'tandem', metrics_path: '/metrics', static_configs: [{ targets: [new URL(t.admin!).host] }] }],
    }));
    prometheus = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    prometheus.stdout!.on('data', (c: Buffer) => (promOutput += c.toString()));
    prometheus.stderr!.on('data', (c: Buffer) => (promOutput += c.toString()));

    // Traffic, and enough scrapes for rate() over it.
    for (let i = 0; i < 20; i++) await (await fetch(`${t.url}/x`)).text();
    await until(`Prometheus to scrape tandem; its output:\n${promOutput}`, 60_000, async () => {
      const r = await query('count_over_time(tandem_build_info[1m]) >= 3');
      return r.status === 'success' && r.data.result.length === 1 ? r : null;
    });
    for (let i = 0; i < 20; i++) await (await fetch(`${t.url}/x`)).text();
    await until('requests to show in a rate', 30_000, async () => {
      const r = await query('sum(rate(tandem_requests_total[1m])) > 0');
      return r.data.result.length === 1 ? r : null;
    });
  });

  after(async () => {
    prometheus?.kill('SIGKILL');
    if (prometheus !== null && prometheus.exitCode === null) await once(prometheus, 'exit');
    await t?.stop('SIGKILL');
    backend?.close();
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  test('every query of the dashboard runs; those about traffic, latency, backends, reloads and the build return data', async () => {
    const dashboard = JSON.parse(await readFile(join(ROOT, 'deploy/grafana/dashboards/tandem.json'), 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
    // Panels about what this tandem has not seen (no VIPs, no upgrades, no errors) may be empty.
    const mayBeEmpty = /VIP|Lease|upgrades|errors|5xx|Retries|Ejections|state changes/i;
    let withData = 0;
    for (const panel of dashboard.panels) {
      for (const target of panel.targets ?? []) {
        const expr = target.expr.replaceAll('$instance', '.*').replaceAll('$__rate_interval', '1m');
        const r = await query(expr);
        assert.equal(r.status, 'success', `${panel.title}: ${expr}: ${r.error}`);
        if (!mayBeEmpty.test(panel.title)) {
          assert.ok(r.data.result.length > 0, `${panel.title}: ${expr} returned nothing`);
          withData++;
        }
      }
    }
    assert.ok(withData >= 15, `only ${withData} queries were checked for data`);
  });

  test('every alerting rule is loaded and evaluates without error, and none fires on a healthy tandem', async () => {
    const res = await fetch(`${api}/api/v1/rules`);
    const body = await res.json() as { data: { groups: { rules: { name: string; health: string; lastError?: string; state: string }[] }[] } };
    const rules = body.data.groups.flatMap((g) => g.rules);
    assert.ok(rules.length >= 8, `${rules.length} rules`);
    // Each rule is evaluated every second: wait for one evaluation of all of them.
    await until('every rule to be evaluated', 10_000, async () => {
      const again = await (await fetch(`${api}/api/v1/rules`)).json() as typeof body;
      const all = again.data.groups.flatMap((g) => g.rules);
      return all.every((r) => r.health === 'ok') ? all : null;
    }).then((all) => {
      for (const r of all) {
        assert.equal(r.health, 'ok', `${r.name}: ${r.lastError}`);
        assert.equal(r.state, 'inactive', `${r.name} fires on a healthy tandem`);
      }
    });
  });
});
