// Counting across data planes. A data plane copies its plain counters into a
// DataPlaneStats (at most once a second, or when the control plane asks before a
// scrape; src/dataplane/agent.ts); the control plane keeps the latest copy of each and
// writes the sums into its own RequestCounters and Backend objects, which its registry
// and status API read as if it had served the requests itself. A data plane that exits
// leaves its last copy behind, so totals never go backwards (requests it finished after
// its last copy are lost with it). Counts whose labels a reload removed (a listener,
// route, pool or backend) are dropped, retired ones included, so their series disappear.

import type { CounterSnapshot, DataPlaneStats } from '../channel/protocol.ts';
import { DENSE_CODES, RequestCounters, type LabelFilter, type RequestCounter, type UpgradeResult } from '../dataplane/telemetry.ts';
import type { Pool } from '../pool/pool.ts';

/** The window of a backend's recent error ratio (Backend.recent), which the status shows. */
export const RECENT_MS = 30_000;

interface BackendTotals { requests: number; failures: number }

/** The control plane's view of every data plane's counts. */
export class DataPlaneCounts {
  private readonly live: Map<number, DataPlaneStats>;
  /** Counts of data planes that exited, kept so that totals never go backwards. */
  private readonly retiredCounters: RequestCounters;
  private readonly retiredBackends: Map<string, BackendTotals>;
  /** `listener\0event` -> count, of data planes that exited. */
  private readonly retiredListenerEvents: Map<string, number>;

  constructor() {
    this.live = new Map();
    this.retiredCounters = new RequestCounters();
    this.retiredBackends = new Map();
    this.retiredListenerEvents = new Map();
  }

  /** The latest copy from data plane `id`. */
  update(id: number, stats: DataPlaneStats): void {
    this.live.set(id, stats);
  }

  /** Data plane `id` exited: its last copy becomes part of the retired totals. */
  retire(id: number): void {
    const stats = this.live.get(id);
    if (stats === undefined) return;
    this.live.delete(id);
    addStats(this.retiredCounters, stats, null);
    for (const [listener, event, n] of stats.listenerEvents) {
      const key = `${listener}\u0000${event}`;
      this.retiredListenerEvents.set(key, (this.retiredListenerEvents.get(key) ?? 0) + n);
    }
    for (const [pool, backend, , requests, failures] of stats.backends) {
      const key = `${pool}\u0000${backend}`;
      const t = this.retiredBackends.get(key);
      if (t === undefined) this.retiredBackends.set(key, { requests, failures });
      else {
        t.requests += requests;
        t.failures += failures;
      }
    }
  }

  /**
   * Writes the sum over all data planes, live and retired, into `counters`, which nothing
   * else counts into; counts whose labels `keep` does not know are left out, and retired
   * ones forgotten.
   */
  writeCounters(counters: RequestCounters, keep: LabelFilter): void {
    this.retiredCounters.prune(keep);
    counters.prune(keep);
    for (const c of counters.values()) clear(c);
    counters.upgrades.clear();
    counters.rejected.clear();
    for (const r of this.retiredCounters.values()) addCounter(counters, r);
    for (const [key, n] of this.retiredCounters.upgrades) counters.upgrades.set(key, n);
    for (const [key, n] of this.retiredCounters.rejected) counters.rejected.set(key, n);
    for (const stats of this.live.values()) addStats(counters, stats, keep);
  }

  /** Writes active, requests and failures summed over the data planes into the control plane's backends. */
  writeBackends(pools: Iterable<Pool>): void {
    const now = Date.now();
    const sums = new Map<string, [number, number, number]>();
    for (const [key, t] of this.retiredBackends) sums.set(key, [0, t.requests, t.failures]);
    for (const stats of this.live.values()) {
      for (const [pool, backend, active, requests, failures] of stats.backends) {
        const key = `${pool}\u0000${backend}`;
        const s = sums.get(key);
        if (s === undefined) sums.set(key, [active, requests, failures]);
        else {
          s[0] += active;
          s[1] += requests;
          s[2] += failures;
        }
      }
    }
    for (const p of pools) {
      for (const b of p.backends) {
        const s = sums.get(`${p.name}\u0000${b.name}`);
        b.active = s?.[0] ?? 0;
        b.requests = s?.[1] ?? 0;
        b.failures = s?.[2] ?? 0;
        b.sample(now, RECENT_MS);
      }
    }
  }

  /** A listener's events (see DataPlaneStats.listenerEvents) over all data planes, live and retired. */
  listenerEvents(listener: string): Record<string, number> {
    const out: Record<string, number> = {};
    const prefix = `${listener}\u0000`;
    for (const [key, n] of this.retiredListenerEvents) if (key.startsWith(prefix)) out[key.slice(prefix.length)] = n;
    for (const stats of this.live.values()) {
      for (const [name, event, n] of stats.listenerEvents) if (name === listener) out[event] = (out[event] ?? 0) + n;
    }
    return out;
  }

  /** Open client connections of a listener over the live data planes. */
  connections(listener: string): number {
    let n = 0;
    for (const stats of this.live.values()) {
      for (const [name, count] of stats.listeners) if (name === listener) n += count;
    }
    return n;
  }
}

function clear(c: RequestCounter): void {
  c.codes.fill(0);
  c.rareCodes = null;
  c.buckets.fill(0);
  c.upstream.fill(0);
  c.sums.fill(0);
  c.errors = null;
}

/** Adds one data plane's counts to `counters`; only those `keep` knows, unless it is null. */
function addStats(counters: RequestCounters, stats: DataPlaneStats, keep: LabelFilter | null): void {
  for (const s of stats.counters) {
    if (keep === null || keep.counter(s.listener, s.route, s.pool, s.backend)) addSnapshot(counters, s);
  }
  for (const [listener, route, pool, result, n] of stats.upgrades) {
    if (keep === null || keep.counter(listener, route, pool, '')) counters.upgrade(listener, route, pool, result as UpgradeResult, n);
  }
  for (const [pool, code, n] of stats.rejected) {
    if (keep === null || keep.pool(pool)) counters.reject(pool, code, n);
  }
}

function addSnapshot(counters: RequestCounters, s: CounterSnapshot): void {
  const c = counters.requestHandle(s.listener, s.route, s.pool, s.backend);
  for (let i = 0; i < s.codes.length; i += 2) {
    const code = s.codes[i];
    const n = s.codes[i + 1];
    if (code >= 0 && code < DENSE_CODES) c.codes[code] += n;
    else {
      c.rareCodes ??= new Map();
      c.rareCodes.set(code, (c.rareCodes.get(code) ?? 0) + n);
    }
  }
  addInto(c.buckets, s.buckets);
  addInto(c.upstream, s.upstream);
  addInto(c.sums, s.sums);
  for (let i = 0; i < s.errors.length; i += 2) c.recordError(s.errors[i] as string, s.errors[i + 1] as number);
}

function addInto(to: Float64Array, from: Float64Array): void {
  for (let i = 0; i < to.length && i < from.length; i++) to[i] += from[i];
}

function addCounter(counters: RequestCounters, r: RequestCounter): void {
  const c = counters.requestHandle(r.listener, r.route, r.pool, r.backend);
  for (let code = 0; code < DENSE_CODES; code++) c.codes[code] += r.codes[code];
  if (r.rareCodes !== null) {
    c.rareCodes ??= new Map();
    for (const [code, n] of r.rareCodes) c.rareCodes.set(code, (c.rareCodes.get(code) ?? 0) + n);
  }
  addInto(c.buckets, r.buckets);
  addInto(c.upstream, r.upstream);
  addInto(c.sums, r.sums);
  if (r.errors !== null) for (const [code, n] of r.errors) c.recordError(code, n);
}
