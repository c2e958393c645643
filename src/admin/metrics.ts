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

import { collectDefaultMetrics, Registry } from 'prom-client';
import type { Aggregator, Metric } from 'prom-client';
import type { EventBus, TandemEvent } from '../events.ts';
import type { Pool } from '../pool/pool.ts';
import { DENSE_CODES, DURATION_BUCKETS, RequestCounters } from '../dataplane/telemetry.ts';
import type { RequestCounter, RequestHandle } from '../dataplane/telemetry.ts';
import type { VipStatusView } from './runtime.ts';

export { DURATION_BUCKETS, RequestCounter } from '../dataplane/telemetry.ts';
export type { RequestHandle } from '../dataplane/telemetry.ts';

/** Where the scrape-time metrics read from; an AdminRuntime is one. */
export interface MetricsSource {
  pools(): ReadonlyMap<string, Pool>;
  vips(): VipStatusView[];
  readonly bus: EventBus;
  /** Messages between the control plane and its data planes by type, each way; a source with it gets `tandem_channel_messages_total`. */
  channelMessages?(): { readonly down: ReadonlyMap<string, number>; readonly up: ReadonlyMap<string, number> };
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

class TandemMetrics implements Metrics {
  readonly registry: Registry;
  private readonly handles: RequestCounters;
  private readonly renewFailures: Map<string, number>;
  private readonly transitions: Map<string, number>;
  private readonly lastVipState: Map<string, string>;
  private readonly reloads: { success: number; failure: number };
  private source: MetricsSource | null;
  private readonly onEvent: (event: TandemEvent) => void;

  constructor(options: MetricsOptions) {
    this.registry = options.registry ?? new Registry();
    this.handles = options.counters ?? new RequestCounters();
    this.renewFailures = new Map();
    this.transitions = new Map();
    this.lastVipState = new Map();
    this.reloads = { success: 0, failure: 0 };
    this.source = null;
    this.onEvent = (event) => this.count(event);
    this.define();
    if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
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
        const labels = { listener: h.listener, route: h.route, pool: h.pool, backend: h.backend };
        let cumulative = 0;
        for (let i = 0; i < h.buckets.length; i++) {
          cumulative += h.buckets[i];
          const le = i < DURATION_BUCKETS.length ? DURATION_BUCKETS[i] : '+Inf';
          out.push({ metricName: 'tandem_request_duration_seconds_bucket', value: cumulative, labels: { ...labels, le } });
        }
        out.push({ metricName: 'tandem_request_duration_seconds_sum', value: h.sum[0], labels });
        out.push({ metricName: 'tandem_request_duration_seconds_count', value: cumulative, labels });
      }
    }));

    this.add(new ScrapedMetric('tandem_backend_up', '1 while health checks and outlier detection count the backend as up, whatever its admin state.', 'gauge', 'min', (out) => {
      for (const pool of this.pools()) {
        for (const b of pool.backends) out.push({ value: b.healthy && !b.ejected ? 1 : 0, labels: { pool: pool.name, backend: b.name } });
      }
    }));

    this.add(new ScrapedMetric('tandem_backend_active_requests', 'Proxied requests in flight to the backend.', 'gauge', 'sum', (out) => {
      for (const pool of this.pools()) {
        for (const b of pool.backends) out.push({ value: b.active, labels: { pool: pool.name, backend: b.name } });
      }
    }));

    this.add(new ScrapedMetric('tandem_health_checks_total', 'Active health checks by result.', 'counter', 'sum', (out) => {
      for (const pool of this.pools()) {
        for (const b of pool.backends) {
          out.push({ value: b.checksOk, labels: { pool: pool.name, backend: b.name, result: 'success' } });
          out.push({ value: b.checksFailed, labels: { pool: pool.name, backend: b.name, result: 'failure' } });
        }
      }
    }));

    // VIP series: in a cluster the HA code runs once, so the primary's value is the one.
    this.add(new ScrapedMetric('tandem_vip_leader', '1 while this node holds the VIP.', 'gauge', 'max', (out) => {
      for (const v of this.vips()) out.push({ value: v.state === 'MASTER' ? 1 : 0, labels: { vip: v.name } });
    }));

    this.add(new ScrapedMetric('tandem_vip_epoch', 'Fencing epoch of the VIP lease as this node last saw it.', 'gauge', 'max', (out) => {
      for (const v of this.vips()) out.push({ value: v.epoch, labels: { vip: v.name } });
    }));

    this.add(new ScrapedMetric('tandem_vip_transitions_total', 'Changes of this node\'s state for the VIP, by the state entered.', 'counter', 'sum', (out) => {
      for (const [key, n] of this.transitions) {
        const sep = key.indexOf('\u0000');
        out.push({ value: n, labels: { vip: key.slice(0, sep), state: key.slice(sep + 1) } });
      }
    }));

    this.add(new ScrapedMetric('tandem_lease_renew_failures_total', 'Lease renewals of a held VIP that failed.', 'counter', 'sum', (out) => {
      for (const v of this.vips()) if (!this.renewFailures.has(v.name)) out.push({ value: 0, labels: { vip: v.name } });
      for (const [vip, n] of this.renewFailures) out.push({ value: n, labels: { vip } });
    }));

    this.add(new ScrapedMetric('tandem_config_reloads_total', 'Config reloads by result.', 'counter', 'sum', (out) => {
      out.push({ value: this.reloads.success, labels: { result: 'success' } });
      out.push({ value: this.reloads.failure, labels: { result: 'failure' } });
    }));
  }
}

function requestLabels(h: RequestCounter, code: number): Labels {
  return { listener: h.listener, route: h.route, pool: h.pool, backend: h.backend, code: String(code) };
}
