// Request counting, the data plane's part of the metrics: plain counters in typed arrays,
// bumped per request without a label hash or a Map lookup, and the access log (whose
// lines src/dataplane/access-log.ts makes). Nothing here loads prom-client: the control
// plane's registry (src/admin/metrics.ts) reads these counters, summed over the data
// planes, at scrape time.

import type { AccessLog } from './access-log.ts';
import type { Exchange, RequestObserver } from './forward.ts';

/** Counts finished requests for one (listener, route, pool, backend); get it once, keep it. */
export interface RequestHandle {
  /** Counts one finished request: its status (0 when none was sent) and its duration. */
  record(status: number, seconds: number): void;
}

/** Hands out request handles: RequestCounters here, or the admin side's Metrics. */
export interface RequestMetrics {
  requestHandle(listener: string, route: string, pool: string, backend: string): RequestHandle;
}

/** Upper bounds of `tandem_request_duration_seconds`: 1 ms (a cached answer on loopback) to 10 s. */
export const DURATION_BUCKETS: readonly number[] = Object.freeze([
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]);
// The hot path scans a typed copy: reading a frozen array was several times slower
// in V8 when measured here.
const BOUNDS = new Float64Array(DURATION_BUCKETS);

/** Status codes below this index live in a dense array; anything else (never seen from
 *  a conforming server) goes to a Map on a cold path. */
export const DENSE_CODES = 600;

/** Plain counters of one label set; read by the registry at scrape time. */
export class RequestCounter implements RequestHandle {
  readonly listener: string;
  readonly route: string;
  readonly pool: string;
  readonly backend: string;
  /** Requests by status code; Float64 stays exact up to 2^53, far past any uptime. */
  readonly codes: Float64Array;
  rareCodes: Map<number, number> | null;
  /** Non-cumulative bucket counts; the last slot is +Inf. Their total is the count. */
  readonly buckets: Float64Array;
  /** Sum of durations in slot 0. A number field would box a new heap number on every
   *  update; a typed array slot is written in place. */
  readonly sum: Float64Array;

  constructor(listener: string, route: string, pool: string, backend: string) {
    this.listener = listener;
    this.route = route;
    this.pool = pool;
    this.backend = backend;
    this.codes = new Float64Array(DENSE_CODES);
    this.rareCodes = null;
    this.buckets = new Float64Array(BOUNDS.length + 1);
    this.sum = new Float64Array(1);
  }

  record(status: number, seconds: number): void {
    if (status >= 0 && status < DENSE_CODES) this.codes[status]++;
    else this.recordRare(status);
    // A linear scan stops early for the fast requests that dominate a proxy's traffic.
    let i = 0;
    while (i < BOUNDS.length && seconds > BOUNDS[i]) i++;
    this.buckets[i]++;
    this.sum[0] += seconds;
  }

  private recordRare(status: number): void {
    this.rareCodes ??= new Map();
    this.rareCodes.set(status, (this.rareCodes.get(status) ?? 0) + 1);
  }
}

/** The request counters of one process, one per label set, kept for the process's life. */
export class RequestCounters {
  private readonly byKey: Map<string, RequestCounter>;

  constructor() {
    this.byKey = new Map();
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
}

/**
 * Where finished requests go: the counters and the access log. Handles are kept in the
 * tables of the generation a request was routed in (RouteRuntime.handles, by listener
 * and backend slot), so a finished request finds its handle by two array reads.
 */
export class Telemetry implements RequestObserver {
  private readonly metrics: RequestMetrics | null;
  private accessLog: AccessLog | null;
  private listeners: readonly string[];
  private readonly noRoute: RequestHandle[];

  constructor(metrics: RequestMetrics | null, accessLog: AccessLog | null, listeners: readonly string[]) {
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
    if (this.metrics !== null) this.handle(e).record(e.status, seconds);
    if (this.accessLog !== null) this.accessLog.write(e, seconds);
  }

  logged(e: Exchange): void {
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
