import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AggregatorRegistry } from 'prom-client';
import { createMetrics, DURATION_BUCKETS } from '../../src/admin/metrics.ts';
import type { Metrics } from '../../src/admin/metrics.ts';
import { startAdmin } from '../../src/admin/server.ts';
import type { AdminServer } from '../../src/admin/server.ts';
import { startBackends, stopAll } from '../helpers/backends.ts';
import type { TestBackend } from '../helpers/backends.ts';
import { declared, find, parse, TANDEM_METRICS, value } from '../helpers/prom.ts';
import { poolConfig, TestRuntime } from './helpers.ts';

describe('metrics', () => {
  let backends: TestBackend[];
  let runtime: TestRuntime;
  let metrics: Metrics;
  let admin: AdminServer;

  const scrape = async () => {
    const res = await fetch(`http://${admin.address}/metrics`);
    assert.equal(res.status, 200);
    return parse(await res.text());
  };

  before(async () => {
    backends = await startBackends(3, 'web');
    runtime = new TestRuntime([
      poolConfig('web', [backends[0].config(), backends[1].config()]),
      poolConfig('api', [backends[2].config()]),
    ], { node: 'lb1', leaseDurationMs: 1000 });
    runtime.vipViews = [
      { name: 'vip-a', address: '10.0.0.100/24', interface: 'eth0', state: 'BACKUP', holder: 'lb2', epoch: 1, leaseRemainingMs: 0 },
      { name: 'vip-b', address: '10.0.0.101/24', interface: 'eth0', state: 'MASTER', holder: 'lb1', epoch: 6, leaseRemainingMs: 800 },
    ];
    metrics = createMetrics();
    admin = await startAdmin(runtime, metrics, { host: '127.0.0.1', port: 0, token: null, authReads: false });
  });

  after(async () => {
    await admin.close();
    await runtime.close();
    await stopAll(backends);
  });

  it('counts every recorded request exactly once, by listener, route, pool, backend and code', async () => {
    const web1 = metrics.requestHandle('web', 'to-web', 'web', 'web1');
    const web2 = metrics.requestHandle('web', 'to-web', 'web', 'web2');
    const noBackend = metrics.requestHandle('web', 'to-api', 'api', '');
    const noRoute = metrics.requestHandle('web', '', '', '');
    let recorded = 0;
    for (let i = 0; i < 1000; i++) {
      web1.record(i % 10 === 0 ? 502 : 200, 0.004);
      recorded++;
    }
    for (let i = 0; i < 333; i++) {
      web2.record(201, 0.02);
      recorded++;
    }
    for (let i = 0; i < 7; i++) {
      noBackend.record(503, 0.0001);
      recorded++;
    }
    noRoute.record(404, 0.0002);
    recorded++;
    web1.record(0, 3); // the client went away before an answer
    web1.record(799, 0.5); // what a broken backend may send
    recorded += 2;

    const s = await scrape();
    const requests = find(s, 'tandem_requests_total');
    assert.equal(requests.reduce((n, x) => n + x.value, 0), recorded);
    const base = { listener: 'web', route: 'to-web', pool: 'web', backend: 'web1' };
    assert.equal(value(s, 'tandem_requests_total', { ...base, code: '200' }), 900);
    assert.equal(value(s, 'tandem_requests_total', { ...base, code: '502' }), 100);
    assert.equal(value(s, 'tandem_requests_total', { ...base, code: '0' }), 1);
    assert.equal(value(s, 'tandem_requests_total', { ...base, code: '799' }), 1);
    assert.equal(value(s, 'tandem_requests_total', { listener: 'web', route: 'to-web', pool: 'web', backend: 'web2', code: '201' }), 333);
    assert.equal(value(s, 'tandem_requests_total', { listener: 'web', route: 'to-api', pool: 'api', backend: '', code: '503' }), 7);
    assert.equal(value(s, 'tandem_requests_total', { listener: 'web', route: '', pool: '', backend: '', code: '404' }), 1);
    for (const x of requests) assert.deepEqual(Object.keys(x.labels).sort(), ['backend', 'code', 'listener', 'pool', 'route']);
  });

  it('hands out the same counters for the same labels, so they survive a reload', async () => {
    const a = metrics.requestHandle('web', 'to-web', 'web', 'web1');
    const b = metrics.requestHandle('web', 'to-web', 'web', 'web1');
    assert.equal(a, b);
    assert.notEqual(a, metrics.requestHandle('web', 'to-web', 'web', 'web2'));
  });

  it('keeps request durations in a histogram from 1 ms to 10 s', async () => {
    const h = metrics.requestHandle('admin-test', 'r', 'p', 'b');
    const seconds = [0.0005, 0.001, 0.003, 0.2, 0.2, 9.9, 42];
    for (const x of seconds) h.record(200, x);
    const s = await scrape();
    const labels = { listener: 'admin-test', route: 'r', pool: 'p', backend: 'b' };
    const buckets = find(s, 'tandem_request_duration_seconds_bucket', labels);
    assert.deepEqual(buckets.map((x) => x.labels.le), [...DURATION_BUCKETS.map(String), '+Inf']);
    assert.equal(DURATION_BUCKETS[0], 0.001);
    assert.equal(DURATION_BUCKETS.at(-1), 10);
    const le = (bound: string) => buckets.find((x) => x.labels.le === bound)?.value;
    assert.equal(le('0.001'), 2);
    assert.equal(le('0.005'), 3);
    assert.equal(le('0.25'), 5);
    assert.equal(le('10'), 6);
    assert.equal(le('+Inf'), 7);
    assert.equal(value(s, 'tandem_request_duration_seconds_count', labels), 7);
    assert.ok(Math.abs(value(s, 'tandem_request_duration_seconds_sum', labels) - seconds.reduce((a, b) => a + b, 0)) < 1e-9);
    for (let i = 1; i < buckets.length; i++) assert.ok(buckets[i].value >= buckets[i - 1].value, 'buckets are cumulative');
  });

  it('reads backend up, active requests and health check counts live from the pools', async () => {
    const web1 = runtime.backend('web', 'web1');
    const web2 = runtime.backend('web', 'web2');
    web1.active = 5;
    web1.checksOk = 12;
    web1.checksFailed = 2;
    web2.setHealthy(false, 'test');
    runtime.backend('api', 'web3').setEjected(true, 'test');
    try {
      const s = await scrape();
      assert.equal(value(s, 'tandem_backend_up', { pool: 'web', backend: 'web1' }), 1);
      assert.equal(value(s, 'tandem_backend_up', { pool: 'web', backend: 'web2' }), 0);
      assert.equal(value(s, 'tandem_backend_up', { pool: 'api', backend: 'web3' }), 0);
      assert.equal(value(s, 'tandem_backend_active_requests', { pool: 'web', backend: 'web1' }), 5);
      assert.equal(value(s, 'tandem_backend_active_requests', { pool: 'web', backend: 'web2' }), 0);
      assert.equal(value(s, 'tandem_health_checks_total', { pool: 'web', backend: 'web1', result: 'success' }), 12);
      assert.equal(value(s, 'tandem_health_checks_total', { pool: 'web', backend: 'web1', result: 'failure' }), 2);
      assert.equal(value(s, 'tandem_health_checks_total', { pool: 'api', backend: 'web3', result: 'success' }), 0);
      assert.equal(find(s, 'tandem_backend_up').length, 3);
    } finally {
      web1.active = 0;
      web2.setHealthy(true, 'test');
      runtime.backend('api', 'web3').setEjected(false, 'test');
    }
  });

  it('counts config reloads by result from the event bus', async () => {
    const before = await scrape();
    const ok0 = value(before, 'tandem_config_reloads_total', { result: 'success' });
    const bad0 = value(before, 'tandem_config_reloads_total', { result: 'failure' });
    runtime.nextReload = { ok: true, errors: [] };
    await runtime.reload();
    await runtime.reload();
    runtime.nextReload = { ok: false, errors: ['f.yaml:1:1: nope'] };
    await runtime.reload();
    runtime.nextReload = { ok: true, errors: [] };
    const s = await scrape();
    assert.equal(value(s, 'tandem_config_reloads_total', { result: 'success' }), ok0 + 2);
    assert.equal(value(s, 'tandem_config_reloads_total', { result: 'failure' }), bad0 + 1);
  });

  it('shows VIP leadership and epoch, counts state changes and lease renewal failures', async () => {
    let s = await scrape();
    assert.equal(value(s, 'tandem_vip_leader', { vip: 'vip-a' }), 0);
    assert.equal(value(s, 'tandem_vip_leader', { vip: 'vip-b' }), 1);
    assert.equal(value(s, 'tandem_vip_epoch', { vip: 'vip-b' }), 6);
    assert.equal(value(s, 'tandem_lease_renew_failures_total', { vip: 'vip-a' }), 0);

    runtime.setVip('vip-a', 'MASTER', 'lb1');
    runtime.setVip('vip-a', 'MASTER', 'lb1', 0); // a repeat of the same state is no transition
    runtime.setVip('vip-a', 'BACKUP', 'lb2');
    runtime.setVip('vip-a', 'MASTER', 'lb1');
    metrics.leaseRenewFailed('vip-a');
    metrics.leaseRenewFailed('vip-a');
    metrics.leaseRenewFailed('vip-b');

    s = await scrape();
    assert.equal(value(s, 'tandem_vip_leader', { vip: 'vip-a' }), 1);
    assert.equal(value(s, 'tandem_vip_epoch', { vip: 'vip-a' }), 4);
    assert.equal(value(s, 'tandem_vip_transitions_total', { vip: 'vip-a', state: 'MASTER' }), 2);
    assert.equal(value(s, 'tandem_vip_transitions_total', { vip: 'vip-a', state: 'BACKUP' }), 1);
    assert.equal(value(s, 'tandem_lease_renew_failures_total', { vip: 'vip-a' }), 2);
    assert.equal(value(s, 'tandem_lease_renew_failures_total', { vip: 'vip-b' }), 1);
  });

  it('includes the default process metrics', async () => {
    const s = await scrape();
    assert.ok(find(s, 'process_cpu_user_seconds_total').length === 1);
    assert.ok(find(s, 'nodejs_heap_size_used_bytes').length === 1);
  });

  it('declares each tandem metric once with its type', async () => {
    const text = await (await fetch(`http://${admin.address}/metrics`)).text();
    const types = Object.fromEntries([...declared(text)].filter(([name]) => name.startsWith('tandem_')));
    // Everything but the channel's messages, which only a control plane with data planes has.
    const { tandem_channel_messages_total: _, ...expected } = TANDEM_METRICS;
    assert.deepEqual(types, expected);
  });

  it('drops prom-client\'s gauges that end in _total and keeps their labeled versions', async () => {
    const types = declared(await (await fetch(`http://${admin.address}/metrics`)).text());
    for (const name of ['nodejs_active_handles', 'nodejs_active_requests', 'nodejs_active_resources']) {
      assert.equal(types.get(`${name}_total`), undefined, `${name}_total`);
      assert.equal(types.get(name), 'gauge', name);
    }
  });

  it('follows backend state, weight, transitions, downtime and ejections; pools say how many backends are available', async () => {
    const web2 = runtime.backend('web', 'web2');
    const labels = { pool: 'web', backend: 'web2' };
    let s = await scrape();
    assert.equal(value(s, 'tandem_backend_state', { ...labels, state: 'up' }), 1);
    assert.equal(find(s, 'tandem_backend_state', labels).reduce((n, x) => n + x.value, 0), 1);
    const downs0 = value(s, 'tandem_backend_transitions_total', { ...labels, to: 'down' });
    const ejections0 = value(s, 'tandem_backend_ejections_total', labels);
    const downtime0 = value(s, 'tandem_backend_downtime_seconds_total', labels);
    assert.equal(value(s, 'tandem_pool_available_backends', { pool: 'web' }), 2);

    web2.setHealthy(false, 'test');
    await new Promise((r) => setTimeout(r, 60));
    s = await scrape();
    assert.equal(value(s, 'tandem_backend_state', { ...labels, state: 'down' }), 1);
    assert.equal(value(s, 'tandem_backend_state', { ...labels, state: 'up' }), 0);
    assert.equal(value(s, 'tandem_pool_available_backends', { pool: 'web' }), 1);
    assert.ok(value(s, 'tandem_backend_downtime_seconds_total', labels) >= downtime0 + 0.05, 'the period under way counts');
    web2.setEjected(true, 'test'); // still down: health wins, but the ejection counts
    web2.setHealthy(true, 'test'); // ejected now
    web2.setEjected(false, 'test');
    web2.setAdmin('draining', 'test');
    web2.setEffectiveWeight(3, 'test');
    s = await scrape();
    assert.equal(value(s, 'tandem_backend_transitions_total', { ...labels, to: 'down' }), downs0 + 1);
    assert.equal(value(s, 'tandem_backend_transitions_total', { ...labels, to: 'ejected' }), 1);
    assert.equal(value(s, 'tandem_backend_transitions_total', { ...labels, to: 'draining' }), 1);
    assert.ok(value(s, 'tandem_backend_transitions_total', { ...labels, to: 'up' }) >= 1);
    assert.equal(value(s, 'tandem_backend_ejections_total', labels), ejections0 + 1);
    assert.equal(value(s, 'tandem_backend_state', { ...labels, state: 'draining' }), 1);
    assert.equal(value(s, 'tandem_backend_weight', labels), 3);
    const downtime = value(s, 'tandem_backend_downtime_seconds_total', labels);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(value(await scrape(), 'tandem_backend_downtime_seconds_total', labels), downtime, 'up again: downtime stands still');
    web2.setAdmin('enabled', 'test');
    web2.setEffectiveWeight(1, 'test');
  });

  it('sums bytes by route, retries by pool and errors by pool and code', async () => {
    const h1 = metrics.requestHandle('sums', 'r', 'web', 'web1');
    const h2 = metrics.requestHandle('sums', 'r', 'web', 'web2');
    h1.record(200, 0.01, 100, 1000, 0, 0.004, null);
    h2.record(200, 0.01, 50, 500, 1, 0.2, null);
    h2.record(502, 0.01, 0, 0, 1, -1, 'TANDEM_ERR_BACKEND_UNREACHABLE');
    metrics.requestHandle('sums', '', '', '').record(404, 0.001, 0, 0, 0, -1, 'TANDEM_ERR_NO_ROUTE');
    const s = await scrape();
    const route = { listener: 'sums', route: 'r', pool: 'web' };
    assert.equal(value(s, 'tandem_request_bytes_total', route), 150);
    assert.equal(value(s, 'tandem_response_bytes_total', route), 1500);
    assert.ok(value(s, 'tandem_retries_total', { pool: 'web' }) >= 2);
    assert.equal(value(s, 'tandem_retries_total', { pool: 'api' }), 0, 'every pool has a series');
    assert.ok(value(s, 'tandem_proxy_errors_total', { pool: 'web', code: 'TANDEM_ERR_BACKEND_UNREACHABLE' }) >= 1);
    assert.ok(value(s, 'tandem_proxy_errors_total', { pool: '', code: 'TANDEM_ERR_NO_ROUTE' }) >= 1);
    assert.equal(value(s, 'tandem_upstream_response_seconds_count', { pool: 'web', backend: 'web2' }) >= 1, true);
    assert.equal(value(s, 'tandem_upstream_response_seconds_bucket', { pool: 'web', backend: 'web1', le: '0.005' }) >= 1, true);
  });

  it('says whether the last reload succeeded', async () => {
    runtime.nextReload = { ok: false, errors: ['f.yaml:1:1: nope'] };
    await runtime.reload();
    assert.equal(value(await scrape(), 'tandem_config_last_reload_successful', {}), 0);
    runtime.nextReload = { ok: true, errors: [] };
    await runtime.reload();
    assert.equal(value(await scrape(), 'tandem_config_last_reload_successful', {}), 1);
  });

  it('shows build info and open connections by listener', async () => {
    runtime.listenerViews = [{ name: 'web', address: '127.0.0.1:8080', bound: true, connections: 7, events: { refused: 3, parked: 4, 'http2-rapid-reset': 2 } }];
    const s = await scrape();
    assert.equal(value(s, 'tandem_listener_connections', { listener: 'web' }), 7);
    assert.equal(value(s, 'tandem_listener_refused_connections_total', { listener: 'web' }), 3);
    assert.equal(value(s, 'tandem_listener_parked_connections_total', { listener: 'web' }), 4);
    assert.equal(value(s, 'tandem_http2_sessions_closed_total', { listener: 'web', reason: 'rapid-reset' }), 2);
    const [info] = find(s, 'tandem_build_info');
    assert.equal(info.value, 1);
    assert.match(info.labels.version, /^\d+\.\d+\.\d+/);
    assert.equal(info.labels.node_version, process.versions.node);
  });

  it('drops the series of a VIP that is gone', async () => {
    const views = runtime.vipViews;
    try {
      runtime.vipViews = views.filter((v) => v.name !== 'vip-a');
      const s = await scrape();
      assert.equal(find(s, 'tandem_vip_transitions_total', { vip: 'vip-a' }).length, 0);
      assert.equal(find(s, 'tandem_lease_renew_failures_total', { vip: 'vip-a' }).length, 0);
      assert.equal(find(s, 'tandem_vip_leader', { vip: 'vip-a' }).length, 0);
    } finally {
      runtime.vipViews = views;
    }
  });
});

describe('metrics across workers', () => {
  it('sum to the total of every worker when aggregated as a cluster primary would', async () => {
    const workers = [createMetrics({ defaultMetrics: false }), createMetrics({ defaultMetrics: false })];
    workers[0].requestHandle('web', 'all', 'web', 'web1').record(200, 0.002);
    workers[0].requestHandle('web', 'all', 'web', 'web1').record(200, 0.002);
    workers[1].requestHandle('web', 'all', 'web', 'web1').record(200, 0.3);
    workers[1].requestHandle('web', 'all', 'web', 'web2').record(500, 0.3);
    const merged = AggregatorRegistry.aggregate(await Promise.all(workers.map((w) => w.registry.getMetricsAsJSON())));
    const s = parse(await merged.metrics());
    assert.equal(value(s, 'tandem_requests_total', { backend: 'web1', code: '200' }), 3);
    assert.equal(value(s, 'tandem_requests_total', { backend: 'web2', code: '500' }), 1);
    assert.equal(value(s, 'tandem_request_duration_seconds_count', { backend: 'web1' }), 3);
    assert.equal(value(s, 'tandem_request_duration_seconds_bucket', { backend: 'web1', le: '0.0025' }), 2);
    assert.equal(value(s, 'tandem_request_duration_seconds_bucket', { backend: 'web1', le: '+Inf' }), 3);
  });
});
