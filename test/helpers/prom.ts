// Reading Prometheus text format in tests, and running promtool on it.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { run } from './netns.ts';

/** Every tandem metric, with its type: the names dashboards and alerts rely on (docs/admin-api.md lists them). */
export const TANDEM_METRICS: Record<string, string> = {
  tandem_build_info: 'gauge',
  tandem_requests_total: 'counter',
  tandem_request_duration_seconds: 'histogram',
  tandem_upstream_response_seconds: 'histogram',
  tandem_request_bytes_total: 'counter',
  tandem_response_bytes_total: 'counter',
  tandem_retries_total: 'counter',
  tandem_proxy_errors_total: 'counter',
  tandem_upgrades_total: 'counter',
  tandem_listener_connections: 'gauge',
  tandem_listener_refused_connections_total: 'counter',
  tandem_listener_parked_connections_total: 'counter',
  tandem_http2_sessions_closed_total: 'counter',
  tandem_backend_up: 'gauge',
  tandem_backend_state: 'gauge',
  tandem_backend_weight: 'gauge',
  tandem_backend_active_requests: 'gauge',
  tandem_backend_transitions_total: 'counter',
  tandem_backend_downtime_seconds_total: 'counter',
  tandem_backend_ejections_total: 'counter',
  tandem_health_checks_total: 'counter',
  tandem_backend_check_duration_seconds: 'histogram',
  tandem_pool_available_backends: 'gauge',
  tandem_vip_leader: 'gauge',
  tandem_vip_epoch: 'gauge',
  tandem_vip_transitions_total: 'counter',
  tandem_lease_renew_failures_total: 'counter',
  tandem_ha_store_events_total: 'counter',
  tandem_config_reloads_total: 'counter',
  tandem_config_last_reload_successful: 'gauge',
  tandem_channel_messages_total: 'counter',
};

export interface Series { name: string; labels: Record<string, string>; value: number }

/** Parses Prometheus text format, enough for tandem's own output. */
export function parse(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Every series named `name` that has all of `labels`. */
export function find(series: Series[], name: string, labels: Record<string, string> = {}): Series[] {
  return series.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/** The value of the one series named `name` with `labels`; fails unless there is exactly one. */
export function value(series: Series[], name: string, labels: Record<string, string>): number {
  const found = find(series, name, labels);
  assert.equal(found.length, 1, `${name}${JSON.stringify(labels)}: ${found.length} series`);
  return found[0].value;
}

/** The sum of every series named `name` with `labels`. */
export function total(series: Series[], name: string, labels: Record<string, string> = {}): number {
  return find(series, name, labels).reduce((n, s) => n + s.value, 0);
}

/** Metric names declared by `# TYPE` lines, with their types. */
export function declared(text: string): Map<string, string> {
  return new Map(Array.from(text.matchAll(/^# TYPE (\S+) (\w+)$/gm), (m) => [m[1], m[2]]));
}

/** Why promtool cannot run here, or null when it can. */
export async function promtoolMissing(): Promise<string | null> {
  const r = await run('sh', ['-c', 'command -v promtool']);
  return r.code === 0 ? null : 'promtool is not installed (apt-get install prometheus)';
}

/** `promtool check metrics` on `text`: its exit code and everything it printed. */
export function promtoolCheckMetrics(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}
