// deploy/prometheus/alerts.yaml and the Grafana dashboard: promtool accepts the rules
// and passes their unit tests (alerts.test.yaml, one test or more for every alert),
// prometheus.yml loads them, and every tandem metric either names is one tandem
// declares, so a renamed metric breaks this test rather than a dashboard or a pager.
// (test/deploy/files.test.ts has promtool parse every query of the dashboard.)

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { createMetrics } from '../../src/admin/metrics.ts';
import { declared, promtoolMissing } from '../helpers/prom.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';
import { ROOT, sh } from './pack.ts';

const PROM = join(ROOT, 'deploy/prometheus');
const noPromtool = skipUnlessCi(await promtoolMissing());

interface Rule { alert?: string; record?: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
interface Panel { id: number; type: string; title: string; targets?: { expr: string; refId: string }[]; datasource?: { uid: string }; gridPos: { x: number; y: number; w: number; h: number } }

const rules = (parse(await readFile(join(PROM, 'alerts.yaml'), 'utf8')) as { groups: { name: string; rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
const dashboard = JSON.parse(await readFile(join(ROOT, 'deploy/grafana/dashboards/tandem.json'), 'utf8')) as { uid: string; panels: Panel[] };
const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));

/** Every metric tandem declares, and the series names of its histograms. */
async function tandemNames(): Promise<Set<string>> {
  const types = declared(await createMetrics().registry.metrics());
  const names = new Set<string>();
  for (const [name, type] of types) {
    names.add(name);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
  }
  return names;
}

/** tandem_* and process_* names in a PromQL expression. */
function metricNames(expr: string): string[] {
  return [...expr.matchAll(/\b((?:tandem|process|nodejs)_[a-z_]+)\b/g)].map((m) => m[1]);
}

describe('deploy/prometheus/alerts.yaml', () => {
  test('the alerts the operations guide names are there, each with a severity, a summary and a description', () => {
    const names = rules.map((r) => r.alert);
    for (const name of ['TandemDown', 'TandemBackendDown', 'TandemPoolNoAvailableBackend', 'TandemVipNoHolder', 'TandemVipTwoHolders', 'TandemReloadFailed', 'TandemHighErrorRatio']) {
      assert.ok(names.includes(name), `${name} is missing`);
    }
    assert.equal(new Set(names).size, names.length, 'alert names are unique');
    for (const r of rules) {
      assert.match(r.labels?.severity ?? '', /^(warning|critical)$/, `${r.alert}'s severity`);
      assert.ok(r.annotations?.summary && r.annotations.description, `${r.alert} says what happened and what to do`);
    }
  });

  test('every metric the rules and the dashboard use is one tandem declares', async () => {
    const names = await tandemNames();
    for (const expr of [...rules.map((r) => r.expr), ...exprs]) {
      for (const name of metricNames(expr)) assert.ok(names.has(name), `${name} (in ${expr.trim()}) is not a metric tandem serves`);
    }
  });

  test('prometheus.yml loads the rules from beside it, and compose mounts them there', async () => {
    const prom = parse(await readFile(join(PROM, 'prometheus.yml'), 'utf8')) as { rule_files: string[] };
    assert.deepEqual(prom.rule_files, ['alerts.yaml']);
    const compose = parse(await readFile(join(ROOT, 'deploy/compose.yaml'), 'utf8'), { merge: true }) as { services: { prometheus: { volumes: string[] } } };
    assert.ok(compose.services.prometheus.volumes.includes('./prometheus/alerts.yaml:/etc/prometheus/alerts.yaml:ro'));
  });

  test('every alert has a unit test in alerts.test.yaml', async () => {
    const tests = parse(await readFile(join(PROM, 'alerts.test.yaml'), 'utf8')) as { rule_files: string[]; tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[] };
    assert.deepEqual(tests.rule_files, ['alerts.yaml']);
    const cases = tests.tests.flatMap((t) => t.alert_rule_test);
    for (const r of rules) {
      const mine = cases.filter((c) => c.alertname === r.alert);
      assert.ok(mine.some((c) => c.exp_alerts.length > 0), `${r.alert} is never shown firing`);
      assert.ok(mine.some((c) => c.exp_alerts.length === 0), `${r.alert} is never shown quiet`);
    }
  });

  test('promtool check rules accepts them', { skip: noPromtool }, async () => {
    const r = await sh('promtool', ['check', 'rules', join(PROM, 'alerts.yaml')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  test('promtool test rules passes every unit test', { skip: noPromtool }, async () => {
    const r = await sh('promtool', ['test', 'rules', 'alerts.test.yaml'], { cwd: PROM });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /SUCCESS/);
  });
});

describe('deploy/grafana/dashboards/tandem.json', () => {
  test('panels have unique ids, the Prometheus data source, and do not overlap', () => {
    const ids = dashboard.panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      if (p.type !== 'row') assert.equal(p.datasource?.uid, 'prometheus', p.title);
      const { x, y, w, h } = p.gridPos;
      assert.ok(x >= 0 && w > 0 && x + w <= 24, `${p.title} fits the 24 columns`);
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          assert.ok(!cells.has(`${i},${j}`), `${p.title} overlaps another panel`);
          cells.add(`${i},${j}`);
        }
      }
    }
  });

  test('it covers traffic, errors by code, latency quantiles, backend states, VIP holders and transitions, and reloads', () => {
    const uses = (re: RegExp) => exprs.some((e) => re.test(e));
    assert.ok(uses(/rate\(tandem_requests_total/), 'request rate');
    assert.ok(uses(/tandem_response_bytes_total/) && uses(/tandem_request_bytes_total/), 'bytes');
    assert.ok(uses(/tandem_listener_connections/), 'connections');
    assert.ok(uses(/by \(code\) \(rate\(tandem_proxy_errors_total/), 'errors by code');
    for (const q of ['0.5', '0.9', '0.99']) assert.ok(uses(new RegExp(`histogram_quantile\\(${q.replace('.', '\\.')}, .*tandem_request_duration_seconds_bucket`)), `p${q.slice(2)} latency`);
    assert.ok(uses(/tandem_upstream_response_seconds_bucket/), 'backend latency');
    for (const state of ['down', 'ejected', 'draining', 'disabled']) assert.ok(uses(new RegExp(`tandem_backend_state\\{[^}]*state="${state}"`)), `backend state ${state}`);
    assert.ok(uses(/tandem_backend_transitions_total/) && uses(/tandem_backend_downtime_seconds_total/), 'backend transitions and downtime');
    assert.ok(uses(/tandem_vip_leader/) && uses(/sum by \(vip\) \(tandem_vip_leader\)/), 'VIP holders');
    assert.ok(uses(/tandem_vip_transitions_total/), 'VIP transitions');
    assert.ok(uses(/tandem_config_reloads_total/) && uses(/tandem_config_last_reload_successful/), 'reloads');
  });
});
