// Request counting, the data plane's part of the metrics: plain counters in typed arrays,
// bumped per request without a label hash or a Map lookup, and the access log (whose
// lines src/dataplane/access-log.ts makes). Nothing here loads prom-client: the control
// plane's registry (src/admin/metrics.ts) reads these counters, summed over the data
// planes, at scrape time.

import type { AccessLog } from './access-log.ts';
import type { Exchange, RequestObserver } from './exchange.ts';
import { BUCKET_SLOTS, bucketOf } from '../histogram.ts';

export { BUCKET_SLOTS, bucketOf, DURATION_BUCKETS } from '../histogram.ts';

/** Counts finished requests for one (listener, route, pool, backend); get it once, keep it. */
export interface RequestHandle {
  /**
   * Counts one finished request: its status (0 when none was sent), its duration, the
   * body bytes it moved each way, its retries, the seconds until the backend's response
   * head (-1: none came) and the catalogue code of tandem's own error (null: none).
   */
  record(status: number, seconds: number, requestBytes?: number, responseBytes?: number,
    retries?: number, upstreamSeconds?: number, errorCode?: string | null): void;
}

/** Hands out request handles: RequestCounters here, or the admin side's Metrics. */
export interface RequestMetrics {
  requestHandle(listener: string, route: string, pool: string, backend: string): RequestHandle;
}

/** Status codes below this index live in a dense array; anything else (never seen from
 *  a conforming server) goes to a Map on a cold path. */
export const DENSE_CODES = 600;

/** Indexes into RequestCounter.sums. */
export const SUM_DURATION = 0;
export const SUM_REQUEST_BYTES = 1;
export const SUM_RESPONSE_BYTES = 2;
export const SUM_RETRIES = 3;
export const SUM_UPSTREAM = 4;
export const SUMS = 5;

/** Plain counters of one label set; read by the registry at scrape time. */
export class RequestCounter implements RequestHandle {
  readonly listener: string;
  readonly route: string;
  readonly pool: string;
  readonly backend: string;
  /** Requests by status code; Float64 stays exact up to 2^53, far past any uptime. */
  readonly codes: Float64Array;
  rareCodes: Map<number, number> | null;
  /** Non-cumulative bucket counts of the duration; the last slot is +Inf. Their total is the count. */
  readonly buckets: Float64Array;
  /** Non-cumulative bucket counts of the time to the backend's response head. */
  readonly upstream: Float64Array;
  /** Sums, indexed by the SUM_* constants: durations, body bytes each way, retries,
   *  upstream times. A number field would box a new heap number on every update; a
   *  typed array slot is written in place. */
  readonly sums: Float64Array;
  /** tandem's own errors by catalogue code; null until the first. */
  errors: Map<string, number> | null;

  constructor(listener: string, route: string, pool: string, backend: string) {
    this.listener = listener;
    this.route = route;
    this.pool = pool;
    this.backend = backend;
    this.codes = new Float64Array(DENSE_CODES);
    this.rareCodes = null;
    this.buckets = new Float64Array(BUCKET_SLOTS);
    this.upstream = new Float64Array(BUCKET_SLOTS);
    this.sums = new Float64Array(SUMS);
    this.errors = null;
  }

  record(status: number, seconds: number, requestBytes = 0, responseBytes = 0, retries = 0,
    upstreamSeconds = -1, errorCode: string | null = null): void {
    if (status >= 0 && status < DENSE_CODES) this.codes[status]++;
    else this.recordRare(status);
    this.buckets[bucketOf(seconds)]++;
    const sums = this.sums;
    sums[SUM_DURATION] += seconds;
    sums[SUM_REQUEST_BYTES] += requestBytes;
    sums[SUM_RESPONSE_BYTES] += responseBytes;
    sums[SUM_RETRIES] += retries;
    if (upstreamSeconds >= 0) {
      this.upstream[bucketOf(upstreamSeconds)]++;
      sums[SUM_UPSTREAM] += upstreamSeconds;
    }
    if (errorCode !== null) this.recordError(errorCode, 1);
  }

  /** Adds `n` errors of `code` (also how sums over data planes are written). */
  recordError(code: string, n: number): void {
    this.errors ??= new Map();
    this.errors.set(code, (this.errors.get(code) ?? 0) + n);
  }

  private recordRare(status: number): void {
    this.rareCodes ??= new Map();
    this.rareCodes.set(status, (this.rareCodes.get(status) ?? 0) + 1);
  }
}

/** How an Upgrade (WebSocket) request ended: the backend switched protocols, answered
 *  with a plain response, or tandem answered it with one of its errors. */
export type UpgradeResult = 'success' | 'refused' | 'error';

/** Which counter labels the config in force still has: counts of removed listeners, routes, pools and backends are dropped. */
export interface LabelFilter {
  counter(listener: string, route: string, pool: string, backend: string): boolean;
  pool(pool: string): boolean;
}

/** What of a config names counter labels. */
interface LabelSource {
  readonly listeners: readonly { readonly name: string }[];
  readonly routes: readonly { readonly name: string; readonly pool: string; readonly listeners: readonly string[] }[];
  readonly pools: ReadonlyMap<string, { readonly backends: readonly { readonly name: string }[] }>;
}

const filters = new WeakMap<LabelSource, LabelFilter>();

/** The LabelFilter of `config`; made once per config (the control plane asks on every scrape). */
export function liveLabels(config: LabelSource): LabelFilter {
  let f = filters.get(config);
  if (f === undefined) {
    f = labelFilter(config);
    filters.set(config, f);
  }
  return f;
}

function labelFilter(config: LabelSource): LabelFilter {
  const listeners = new Set(config.listeners.map((l) => l.name));
  const routes = new Map(config.routes.map((r) => [r.name, r]));
  const backends = new Map<string, Set<string>>();
  for (const [name, p] of config.pools) backends.set(name, new Set(p.backends.map((b) => b.name)));
  return {
    counter(listener, route, pool, backend) {
      if (!listeners.has(listener)) return false;
      if (route === '') return pool === '' && backend === '';
      const r = routes.get(route);
      if (r === undefined || r.pool !== pool) return false;
      if (r.listeners.length > 0 && !r.listeners.includes(listener)) return false;
      return backend === '' || backends.get(pool)?.has(backend) === true;
    },
    pool(pool) {
      return pool === '' || backends.has(pool);
    },
  };
}

/**
 * The request counters of one process, one per label set, kept until a reload removes
 * what their labels name; and the counts that are not per finished request: Upgrade
 * requests, and errors tandem answered outside an exchange (a request the parser refused).
 */
export class RequestCounters {
  private readonly byKey: Map<string, RequestCounter>;
  /** `listener\0route\0pool\0result` -> Upgrade requests. */
  readonly upgrades: Map<string, number>;
  /** `pool\0code` -> errors answered outside an exchange. */
  readonly rejected: Map<string, number>;

  constructor() {
    this.byKey = new Map();
    this.upgrades = new Map();
    this.rejected = new Map();
  }

  /** The counter for these labels; the same one every time, so that counts survive reloads. */
  requestHandle(listener: string, route: string, pool: string, backend: string): RequestCounter {
    const key = `${listener}\u0000${route}\u0000${pool}\u0000${backend}`;
    let counter = this.byKey.get(key);
    if (counter === undefined) {
      counter = new RequestCounter(listener, route, pool, backend);
      this.byKey.set(key, counter);
    }
    return counter;
  }

  values(): IterableIterator<RequestCounter> {
    return this.byKey.values();
  }

  /** Counts `n` Upgrade requests of this result. */
  upgrade(listener: string, route: string, pool: string, result: UpgradeResult, n = 1): void {
    const key = `${listener}\u0000${route}\u0000${pool}\u0000${result}`;
    this.upgrades.set(key, (this.upgrades.get(key) ?? 0) + n);
  }

  /** Counts `n` errors answered outside an exchange. */
  reject(pool: string, code: string, n = 1): void {
    const key = `${pool}\u0000${code}`;
    this.rejected.set(key, (this.rejected.get(key) ?? 0) + n);
  }

  /** Forgets every count whose labels `keep` does not know (a reload removed them). */
  prune(keep: LabelFilter): void {
    for (const [key, c] of this.byKey) if (!keep.counter(c.listener, c.route, c.pool, c.backend)) this.byKey.delete(key);
    for (const key of this.upgrades.keys()) {
      const [listener, route, pool] = key.split('\u0000');
      if (!keep.counter(listener, route, pool, '')) this.upgrades.delete(key);
    }
    for (const key of this.rejected.keys()) if (!keep.pool(key.slice(0, key.indexOf('\u0000')))) this.rejected.delete(key);
  }
}

/**
 * Where finished requests go: the counters and the access log. Handles are kept in the
 * tables of the generation a request was routed in (RouteRuntime.handles, by listener
 * and backend slot), so a finished request finds its handle by two array reads.
 */
export class Telemetry implements RequestObserver {
  private readonly metrics: RequestCounters | null;
  private accessLog: AccessLog | null;
  private listeners: readonly string[];
  private readonly noRoute: RequestHandle[];

  constructor(metrics: RequestCounters | null, accessLog: AccessLog | null, listeners: readonly string[]) {
    this.metrics = metrics;
    this.accessLog = accessLog;
    this.listeners = listeners;
    this.noRoute = [];
  }

  /**
   * A reload changed the access log. Requests in flight keep this Telemetry, so their
   * lines go to the new log; the old one is closed by the caller.
   */
  setAccessLog(log: AccessLog | null): void {
    this.accessLog = log;
  }

  /** A reload renamed or reordered listeners. */
  setListeners(listeners: readonly string[]): void {
    this.listeners = listeners;
    this.noRoute.length = 0;
  }

  finished(e: Exchange): void {
    const seconds = (performance.now() - e.start) / 1000;
    if (this.metrics !== null) {
      this.handle(e).record(e.status, seconds, e.received, e.bytes, e.retries, e.upstreamSeconds ?? -1, e.errorCode);
    }
    if (this.accessLog !== null) this.accessLog.write(e, seconds);
  }

  switched(e: Exchange): void {
    this.metrics?.upgrade(this.listeners[e.ctx.listener] ?? '', e.route?.name ?? '', e.route?.pool.name ?? '', 'success');
  }

  /** See RequestObserver.logged: written to the access log, counted by upgrade result and error code. */
  logged(e: Exchange): void {
    const m = this.metrics;
    // A session that switched protocols was counted then (switched), whatever broke later.
    if (m !== null && e.status !== 101) {
      const pool = e.route?.pool.name ?? '';
      if (e.upgrade) {
        // tandem's own error, or a client gone first (499): error; else the backend answered plainly.
        const result: UpgradeResult = e.errorCode !== null || e.status === 499 ? 'error' : 'refused';
        m.upgrade(this.listeners[e.ctx.listener] ?? '', e.route?.name ?? '', pool, result);
      }
      if (e.errorCode !== null) m.reject(pool, e.errorCode);
    }
    if (this.accessLog !== null) this.accessLog.write(e, (performance.now() - e.start) / 1000);
  }

  private handle(e: Exchange): RequestHandle {
    const li = e.ctx.listener;
    const route = e.route;
    if (route === null) {
      return this.noRoute[li] ??= this.metrics!.requestHandle(this.listeners[li] ?? '', '', '', '');
    }
    const row = route.handles[li] ??= [];
    const b = e.backend;
    let slot = 0;
    if (b !== null) {
      // A backend a reload moved within its pool (reused by the next generation) is
      // found by a scan of the old pool's list; that happens once per moved backend.
      const backends = route.pool.pool.backends;
      slot = (backends[b.slot] === b ? b.slot : backends.indexOf(b)) + 1;
    }
    return row[slot] ??= this.metrics!.requestHandle(this.listeners[li] ?? '', route.name, route.pool.name, b?.name ?? '');
  }
}
