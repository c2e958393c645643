// Counting across data planes. A data plane copies its plain counters into a
// DataPlaneStats (at most once a second, or when the control plane asks before a
// scrape; src/dataplane/agent.ts); the control plane keeps the latest copy of each and
// writes the sums into its own RequestCounters and Backend objects, which its registry
// and status API read as if it had served the requests itself. A data plane that exits
// leaves its last copy behind, so totals never go backwards (requests it finished after
// its last copy are lost with it).

import type { CounterSnapshot, DataPlaneStats } from '../channel/protocol.ts';
import { DENSE_CODES, RequestCounters, type RequestCounter } from '../dataplane/telemetry.ts';
import type { Pool } from '../pool/pool.ts';

interface BackendTotals { requests: number; failures: number }

/** The control plane's view of every data plane's counts. */
export class DataPlaneCounts {
  private readonly live: Map<number, DataPlaneStats>;
  /** Counts of data planes that exited, kept so that totals never go backwards. */
  private readonly retiredCounters: RequestCounters;
  private readonly retiredBackends: Map<string, BackendTotals>;

  constructor() {
    this.live = new Map();
    this.retiredCounters = new RequestCounters();
    this.retiredBackends = new Map();
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
    for (const c of stats.counters) addSnapshot(this.retiredCounters, c);
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

  /** Writes the sum over all data planes, live and retired, into `counters`, which nothing else counts into. */
  writeCounters(counters: RequestCounters): void {
    for (const c of counters.values()) clear(c);
    for (const r of this.retiredCounters.values()) addCounter(counters, r);
    for (const stats of this.live.values()) for (const s of stats.counters) addSnapshot(counters, s);
  }

  /** Writes active, requests and failures summed over the data planes into the control plane's backends. */
  writeBackends(pools: Iterable<Pool>): void {
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
      }
    }
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
  c.sum[0] = 0;
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
  for (let i = 0; i < c.buckets.length && i < s.buckets.length; i++) c.buckets[i] += s.buckets[i];
  c.sum[0] += s.sum;
}

function addCounter(counters: RequestCounters, r: RequestCounter): void {
  const c = counters.requestHandle(r.listener, r.route, r.pool, r.backend);
  for (let code = 0; code < DENSE_CODES; code++) c.codes[code] += r.codes[code];
  if (r.rareCodes !== null) {
    c.rareCodes ??= new Map();
    for (const [code, n] of r.rareCodes) c.rareCodes.set(code, (c.rareCodes.get(code) ?? 0) + n);
  }
  for (let i = 0; i < c.buckets.length; i++) c.buckets[i] += r.buckets[i];
  c.sum[0] += r.sum[0];
}
