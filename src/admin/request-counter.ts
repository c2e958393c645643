// The per-request part of the metrics, kept apart from prom-client: a cluster worker
// counts requests with these plain objects and never loads the registry (a worker must
// stay small); the primary's registry in metrics.ts reads the same objects at scrape time.

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

/** Counts finished requests for one (listener, route, pool, backend); get it once, keep it. */
export interface RequestHandle {
  /** Counts one finished request: its status (0 when none was sent) and its duration. */
  record(status: number, seconds: number): void;
}

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
