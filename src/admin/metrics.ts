// Prometheus metrics of an instance. Nothing here runs per request except
// RequestCounter.record, which only bumps numbers in typed arrays it owns: labels are
// attached at scrape time, when the registry asks, so the hot path never hashes a
// label set or looks a child up. Everything else (backend state, VIPs, health checks)
// is read live from the objects that already keep it.
//
// Data planes count with the plain counters of src/dataplane/telemetry.ts and never
// load prom-client; the control plane's registry reads their sums (see src/control/). Each
// metric still declares its `aggregator` (counters and histograms sum), for anyone
// merging registries with prom-client's AggregatorRegistry.

import { readFileSync } from 'node:fs';
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { Aggregator, Metric } from 'prom-client';
import type { EventBus, TandemEvent } from '../events.ts';
import { BACKEND_STATES } from '../pool/backend.ts';
import type { Pool } from '../pool/pool.ts';
import { BUCKET_SLOTS, DENSE_CODES, DURATION_BUCKETS, RequestCounters, SUM_DURATION, SUM_REQUEST_BYTES, SUM_RESPONSE_BYTES, SUM_RETRIES, SUM_UPSTREAM } from '../dataplane/telemetry.ts';
import type { RequestCounter, RequestHandle } from '../dataplane/telemetry.ts';
import type { ListenerView, VipStatusView } from './runtime.ts';

export { DURATION_BUCKETS, RequestCounter } from '../dataplane/telemetry.ts';
export type { RequestHandle } from '../dataplane/telemetry.ts';

/** Where the scrape-time metrics read from; an AdminRuntime is one. */
export interface MetricsSource {
  pools(): ReadonlyMap<string, Pool>;
  vips(): VipStatusView[];
  /** Listeners of the config in force, with their open client connections. */
  listeners(): ListenerView[];
  readonly bus: EventBus;
  /** Messages between the control plane and its data planes by type, each way; a source with it gets `tandem_channel_messages_total`. */
  channelMessages?(): { readonly down: ReadonlyMap<string, number>; readonly up: ReadonlyMap<string, number> };
  /** The HA lease store's counters, with the store's kind; null without HA. A source with it gets `tandem_ha_store_events_total`. */
  storeStats?(): { readonly store: string; readonly stats: Readonly<Record<string, number>> } | null;
}

export interface Metrics {
  /** The registry to scrape (or to hand to an AggregatorRegistry in a cluster). */
  readonly registry: Registry;
  /** The request counter for these labels; backend is '' when no backend was picked. */
  requestHandle(listener: string, route: string, pool: string, backend: string): RequestHandle;
  /** Counts a failed lease renewal; called by the HA code. */
  leaseRenewFailed(vip: string): void;
  /** Reads pools and VIPs from `source` and counts its bus events; calling again with the same source does nothing. */
  observe(source: MetricsSource): void;
}

export interface MetricsOptions {
  /** Add prom-client's default process metrics (default true). */
  defaultMetrics?: boolean;
  /** Register into this registry instead of a new one (a cluster primary's, which gathers its workers' counts before each scrape). */
  registry?: Registry;
  /** Count into these counters (a cluster primary fills them with its workers' sums). */
  counters?: RequestCounters;
}

/** Builds the registry with every tandem metric; safe to run once per worker. */
export function createMetrics(options: MetricsOptions = {}): Metrics {
  return new TandemMetrics(options);
}

type MetricKind = 'counter' | 'gauge' | 'histogram';
type Labels = Record<string, string | number>;
interface Sample { value: number; labels: Labels; metricName?: string }
type Collect = (out: Sample[]) => void;

/**
 * A metric whose samples are produced by a function at scrape time. It speaks the
 * protocol prom-client's Registry and AggregatorRegistry use (`get()` returning name,
 * help, type, values, aggregator), which lets the samples come from our own counters.
 */
class ScrapedMetric {
  name: string;
  readonly help: string;
  readonly type: MetricKind;
  readonly aggregator: Aggregator;
  private readonly produce: Collect;

  constructor(name: string, help: string, type: MetricKind, aggregator: Aggregator, produce: Collect) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.aggregator = aggregator;
    this.produce = produce;
  }

  async get(): Promise<{ name: string; help: string; type: MetricKind; aggregator: Aggregator; values: Sample[] }> {
    const values: Sample[] = [];
    this.produce(values);
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** Registry.resetMetrics() calls this; our counters belong to their owners and are not reset. */
  reset(): void {}
}

/** Default metrics left out. */
const DEFAULT_METRICS_DROPPED = [
  // prom-client's gauges that end in _total (promtool: non-counter metrics should not);
  // each is the sum of the labeled gauge of the same name without the suffix.
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

class TandemMetrics implements Metrics {
  readonly registry: Registry;
  private readonly handles: RequestCounters;
  private readonly renewFailures: Map<string, number>;
  private readonly transitions: Map<string, number>;
  private readonly lastVipState: Map<string, string>;
  private readonly reloads: { success: number; failure: number; lastOk: boolean };
  private source: MetricsSource | null;
  private readonly onEvent: (event: TandemEvent) => void;

  constructor(options: MetricsOptions) {
    this.registry = options.registry ?? new Registry();
    this.handles = options.counters ?? new RequestCounters();
    this.renewFailures = new Map();
    this.transitions = new Map();
    this.lastVipState = new Map();
    this.reloads = { success: 0, failure: 0, lastOk: true };
    this.source = null;
    this.onEvent = (event) => this.count(event);
    this.define();
    if (options.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry });
      for (const name of DEFAULT_METRICS_DROPPED) this.registry.removeSingleMetric(name);
    }
  }

  requestHandle(listener: string, route: string, pool: string, backend: string): RequestHandle {
    // The same handle for the same labels, so that counters survive reloads.
    return this.handles.requestHandle(listener, route, pool, backend);
  }

  leaseRenewFailed(vip: string): void {
    this.renewFailures.set(vip, (this.renewFailures.get(vip) ?? 0) + 1);
  }

  observe(source: MetricsSource): void {
    if (this.source === source) return;
    this.source?.bus.off('event', this.onEvent);
    this.source = source;
    source.bus.on('event', this.onEvent);
    if (source.channelMessages !== undefined && this.registry.getSingleMetric('tandem_channel_messages_total') === undefined) {
      this.add(new ScrapedMetric('tandem_channel_messages_total', 'Messages between the control plane and its data planes, by direction (down: to the data planes) and type.', 'counter', 'sum', (out) => {
        const counts = this.source?.channelMessages?.();
        if (counts === undefined) return;
        for (const [type, n] of counts.down) out.push({ value: n, labels: { direction: 'down', type } });
        for (const [type, n] of counts.up) out.push({ value: n, labels: { direction: 'up', type } });
      }));
    }
  }

  private count(event: TandemEvent): void {
    if (event.type === 'reload') {
      this.reloads[event.result]++;
      this.reloads.lastOk = event.result === 'success';
    } else if (event.type === 'vip') {
      // Events may repeat a state (a new holder or epoch seen from BACKUP); only changes count.
      if (this.lastVipState.get(event.vip) === event.state) return;
      this.lastVipState.set(event.vip, event.state);
      const key = `${event.vip}\u0000${event.state}`;
      this.transitions.set(key, (this.transitions.get(key) ?? 0) + 1);
    }
  }

  private pools(): Iterable<Pool> {
    return this.source === null ? [] : this.source.pools().values();
  }

  private vips(): VipStatusView[] {
    return this.source === null ? [] : this.source.vips();
  }

  private add(metric: ScrapedMetric): void {
    // ScrapedMetric is not one of prom-client's classes but implements what Registry calls.
    this.registry.registerMetric(metric as unknown as Metric);
  }

  private define(): void {
    this.defineBuild();
    this.defineRequests();
    this.defineBackends();
    this.defineOperations();
  }

  private defineBuild(): void {
    const labels = { version: packageVersion(), node_version: process.versions.node };
    this.add(new ScrapedMetric('tandem_build_info', 'Always 1; the labels say which tandem and which Node.js run.', 'gauge', 'first', (out) => {
      out.push({ value: 1, labels });
    }));
  }

  /** What the data planes count per request, summed over them. */
  private defineRequests(): void {
    this.add(new ScrapedMetric('tandem_requests_total', 'Finished proxied requests by listener, route, pool, backend and status code.', 'counter', 'sum', (out) => {
      for (const h of this.handles.values()) {
        for (let code = 0; code < DENSE_CODES; code++) {
          const n = h.codes[code];
          if (n !== 0) out.push({ value: n, labels: requestLabels(h, code) });
        }
        if (h.rareCodes !== null) for (const [code, n] of h.rareCodes) out.push({ value: n, labels: requestLabels(h, code) });
      }
    }));

    this.add(new ScrapedMetric('tandem_request_duration_seconds', 'Time from receiving a request to finishing its response.', 'histogram', 'sum', (out) => {
      for (const h of this.handles.values()) {
        histogram(out, 'tandem_request_duration_seconds', { listener: h.listener, route: h.route, pool: h.pool, backend: h.backend }, h.buckets, h.sums[SUM_DURATION]);
      }
    }));

    this.add(new ScrapedMetric('tandem_upstream_response_seconds', 'Time from sending a request to the backend to receiving its response head, by pool and backend.', 'histogram', 'sum', (out) => {
      const byBackend = new Map<string, { pool: string; backend: string; buckets: Float64Array; sum: number }>();
      for (const h of this.handles.values()) {
        if (h.backend === '') continue;
        const key = `${h.pool}\u0000${h.backend}`;
        let t = byBackend.get(key);
        if (t === undefined) {
          t = { pool: h.pool, backend: h.backend, buckets: new Float64Array(h.upstream.length), sum: 0 };
          byBackend.set(key, t);
        }
        for (let i = 0; i < h.upstream.length; i++) t.buckets[i] += h.upstream[i];
        t.sum += h.sums[SUM_UPSTREAM];
      }
      for (const t of byBackend.values()) histogram(out, 'tandem_upstream_response_seconds', { pool: t.pool, backend: t.backend }, t.buckets, t.sum);
    }));

    this.add(new ScrapedMetric('tandem_request_bytes_total', 'Request body bytes sent to backends, by listener, route and pool.', 'counter', 'sum', (out) => {
      for (const [labels, n] of this.byRoute(SUM_REQUEST_BYTES)) out.push({ value: n, labels });
    }));

    this.add(new ScrapedMetric('tandem_response_bytes_total', 'Response body bytes relayed from backends to clients, by listener, route and pool.', 'counter', 'sum', (out) => {
      for (const [labels, n] of this.byRoute(SUM_RESPONSE_BYTES)) out.push({ value: n, labels });
    }));

    this.add(new ScrapedMetric('tandem_retries_total', 'Requests sent again to another backend after a failed attempt, by pool.', 'counter', 'sum', (out) => {
      const byPool = new Map<string, number>();
      for (const pool of this.pools()) byPool.set(pool.name, 0);
      for (const h of this.handles.values()) {
        const n = byPool.get(h.pool);
        if (n !== undefined) byPool.set(h.pool, n + h.sums[SUM_RETRIES]);
      }
      for (const [pool, n] of byPool) out.push({ value: n, labels: { pool } });
    }));

    this.add(new ScrapedMetric('tandem_proxy_errors_total', 'Errors tandem answered clients with itself, by pool (empty when none was routed to) and error code (docs/errors.md).', 'counter', 'sum', (out) => {
      const byKey = new Map<string, number>();
      for (const h of this.handles.values()) {
        if (h.errors === null) continue;
        for (const [code, n] of h.errors) addTo(byKey, `${h.pool}\u0000${code}`, n);
      }
      for (const [key, n] of this.handles.rejected) addTo(byKey, key, n);
      for (const [key, n] of byKey) {
        const [pool, code] = key.split('\u0000');
        out.push({ value: n, labels: { pool, code } });
      }
    }));

    this.add(new ScrapedMetric('tandem_upgrades_total', 'Upgrade (WebSocket) requests by listener, route, pool and result: success (the backend switched protocols), refused (it answered with a plain response) or error (tandem answered with an error).', 'counter', 'sum', (out) => {
      for (const [key, n] of this.handles.upgrades) {
        const [listener, route, pool, result] = key.split('\u0000');
        out.push({ value: n, labels: { listener, route, pool, result } });
      }
    }));

    this.add(new ScrapedMetric('tandem_listener_connections', 'Client connections open now, by listener.', 'gauge', 'sum', (out) => {
      if (this.source === null) return;
      for (const l of this.source.listeners()) out.push({ value: l.connections, labels: { listener: l.name } });
    }));

    this.add(new ScrapedMetric('tandem_listener_refused_connections_total', "Client connections closed at once because the listener's maxConnections were open.", 'counter', 'sum', (out) => {
      if (this.source === null) return;
      for (const l of this.source.listeners()) out.push({ value: l.events.refused ?? 0, labels: { listener: l.name } });
    }));

    this.add(new ScrapedMetric('tandem_listener_parked_connections_total', 'Times a client connection idle between requests for 1 s gave its HTTP parser back (engine: fast), to take one again with its next bytes.', 'counter', 'sum', (out) => {
      if (this.source === null) return;
      for (const l of this.source.listeners()) if (l.events.parked !== undefined) out.push({ value: l.events.parked, labels: { listener: l.name } });
    }));

    this.add(new ScrapedMetric('tandem_http2_sessions_closed_total', 'HTTP/2 sessions a guard closed, by listener and reason (rapid-reset, settings-flood, ping-flood); a series appears with its first.', 'counter', 'sum', (out) => {
      if (this.source === null) return;
      for (const l of this.source.listeners()) {
        for (const [event, n] of Object.entries(l.events)) if (event.startsWith('http2-')) out.push({ value: n, labels: { listener: l.name, reason: event.slice(6) } });
      }
    }));

    this.add(new ScrapedMetric('tandem_ha_store_events_total', 'What the HA lease store did, by store and event: for peer, adverts sent, received, accepted and dropped by reason; for etcd, requests, endpoint errors and failovers.', 'counter', 'sum', (out) => {
      const s = this.source?.storeStats?.() ?? null;
      if (s === null) return;
      for (const [event, n] of Object.entries(s.stats)) out.push({ value: n, labels: { store: s.store, event: event.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`) } });
    }));
  }

  /** A sum of the counters, by listener, route and pool (backends added up); requests that matched no route are left out. */
  private byRoute(slot: number): Iterable<[Labels, number]> {
    const byKey = new Map<string, [Labels, number]>();
    for (const h of this.handles.values()) {
      if (h.route === '') continue;
      const key = `${h.listener}\u0000${h.route}\u0000${h.pool}`;
      const t = byKey.get(key);
      if (t === undefined) byKey.set(key, [{ listener: h.listener, route: h.route, pool: h.pool }, h.sums[slot]]);
      else t[1] += h.sums[slot];
    }
    return byKey.values();
  }

  /** Backend state, read live from the control plane's pools. */
  private defineBackends(): void {
    const perBackend = (name: string, help: string, type: MetricKind, aggregator: Aggregator, emit: (out: Sample[], pool: Pool, b: Pool['backends'][number], labels: Labels) => void) => {
      this.add(new ScrapedMetric(name, help, type, aggregator, (out) => {
        for (const pool of this.pools()) {
          for (const b of pool.backends) emit(out, pool, b, { pool: pool.name, backend: b.name });
        }
      }));
    };

    perBackend('tandem_backend_up', '1 while health checks and outlier detection count the backend as up, whatever its admin state.', 'gauge', 'min', (out, _p, b, labels) => {
      out.push({ value: b.healthy && !b.ejected ? 1 : 0, labels });
    });

    perBackend('tandem_backend_state', '1 for the state the backend is in (up, down, ejected, draining, disabled), 0 for the others.', 'gauge', 'first', (out, _p, b, labels) => {
      const state = b.state();
      for (const s of BACKEND_STATES) out.push({ value: s === state ? 1 : 0, labels: { ...labels, state: s } });
    });

    perBackend('tandem_backend_weight', 'Weight the balancer gives the backend now: the configured or runtime weight, ramped during slow start.', 'gauge', 'first', (out, _p, b, labels) => {
      out.push({ value: b.effectiveWeight, labels });
    });

    perBackend('tandem_backend_active_requests', 'Proxied requests in flight to the backend.', 'gauge', 'sum', (out, _p, b, labels) => {
      out.push({ value: b.active, labels });
    });

    perBackend('tandem_backend_transitions_total', 'Changes of the backend\'s state, by the state entered (to).', 'counter', 'first', (out, _p, b, labels) => {
      for (const s of BACKEND_STATES) out.push({ value: b.record.transitions.get(s) ?? 0, labels: { ...labels, to: s } });
    });

    perBackend('tandem_backend_downtime_seconds_total', 'Seconds the backend spent down or ejected (tandem_backend_up 0), the current period included.', 'counter', 'first', (out, _p, b, labels) => {
      out.push({ value: b.record.downSeconds(), labels });
    });

    perBackend('tandem_backend_ejections_total', 'Times outlier detection took the backend out (ejections by several workers at once count once).', 'counter', 'first', (out, _p, b, labels) => {
      out.push({ value: b.record.ejections, labels });
    });

    perBackend('tandem_health_checks_total', 'Active health checks by result.', 'counter', 'sum', (out, _p, b, labels) => {
      out.push({ value: b.checksOk, labels: { ...labels, result: 'success' } });
      out.push({ value: b.checksFailed, labels: { ...labels, result: 'failure' } });
    });

    const noChecks = new Float64Array(BUCKET_SLOTS);
    perBackend('tandem_backend_check_duration_seconds', 'Time an active health check took, passed or failed.', 'histogram', 'first', (out, pool, b, labels) => {
      if (pool.config.healthCheck === null) return;
      histogram(out, 'tandem_backend_check_duration_seconds', labels, b.record.checkBuckets ?? noChecks, b.record.checkSum);
    });

    this.add(new ScrapedMetric('tandem_pool_available_backends', 'Backends of the pool that may take requests now (enabled, up, not ejected, weight above 0).', 'gauge', 'first', (out) => {
      for (const pool of this.pools()) {
        let n = 0;
        for (const b of pool.backends) if (b.isAvailable()) n++;
        out.push({ value: n, labels: { pool: pool.name } });
      }
    }));
  }

  /** VIPs and reloads. */
  private defineOperations(): void {
    // VIP series: in a cluster the HA code runs once, so the primary's value is the one.
    this.add(new ScrapedMetric('tandem_vip_leader', '1 while this node holds the VIP.', 'gauge', 'max', (out) => {
      for (const v of this.vips()) out.push({ value: v.state === 'MASTER' ? 1 : 0, labels: { vip: v.name } });
    }));

    this.add(new ScrapedMetric('tandem_vip_epoch', 'Fencing epoch of the VIP lease as this node last saw it.', 'gauge', 'max', (out) => {
      for (const v of this.vips()) out.push({ value: v.epoch, labels: { vip: v.name } });
    }));

    this.add(new ScrapedMetric('tandem_vip_transitions_total', 'Changes of this node\'s state for the VIP, by the state entered.', 'counter', 'sum', (out) => {
      const vips = new Set(this.vips().map((v) => v.name));
      for (const [key, n] of this.transitions) {
        const sep = key.indexOf('\u0000');
        const vip = key.slice(0, sep);
        if (vips.has(vip)) out.push({ value: n, labels: { vip, state: key.slice(sep + 1) } });
      }
    }));

    this.add(new ScrapedMetric('tandem_lease_renew_failures_total', 'Lease renewals of a held VIP that failed.', 'counter', 'sum', (out) => {
      for (const v of this.vips()) out.push({ value: this.renewFailures.get(v.name) ?? 0, labels: { vip: v.name } });
    }));

    this.add(new ScrapedMetric('tandem_config_reloads_total', 'Config reloads by result.', 'counter', 'sum', (out) => {
      out.push({ value: this.reloads.success, labels: { result: 'success' } });
      out.push({ value: this.reloads.failure, labels: { result: 'failure' } });
    }));

    this.add(new ScrapedMetric('tandem_config_last_reload_successful', '0 after a reload failed (the running config is older than the file), 1 after one succeeded or before any.', 'gauge', 'min', (out) => {
      out.push({ value: this.reloads.lastOk ? 1 : 0, labels: {} });
    }));
  }
}

/** Pushes a histogram's bucket, sum and count samples from non-cumulative `buckets` (+Inf last). */
function histogram(out: Sample[], name: string, labels: Labels, buckets: Float64Array, sum: number): void {
  let cumulative = 0;
  for (let i = 0; i < buckets.length; i++) {
    cumulative += buckets[i];
    const le = i < DURATION_BUCKETS.length ? DURATION_BUCKETS[i] : '+Inf';
    out.push({ metricName: `${name}_bucket`, value: cumulative, labels: { ...labels, le } });
  }
  out.push({ metricName: `${name}_sum`, value: sum, labels });
  out.push({ metricName: `${name}_count`, value: cumulative, labels });
}

function addTo(map: Map<string, number>, key: string, n: number): void {
  map.set(key, (map.get(key) ?? 0) + n);
}

let version: string | null = null;

/** package.json's version; src/ and the packaged dist/ are both one level below it. */
function packageVersion(): string {
  version ??= (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return version;
}

function requestLabels(h: RequestCounter, code: number): Labels {
  return { listener: h.listener, route: h.route, pool: h.pool, backend: h.backend, code: String(code) };
}
