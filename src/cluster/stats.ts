// Counting across a cluster. A worker copies its plain counters into a WorkerStats
// (at most once a second, or when the primary asks before a scrape); the primary keeps
// the latest copy of each worker and writes the sums into its own RequestCounters and
// Backend objects, which its registry and status API read as if it had served the
// requests itself. A worker that exits leaves its last copy behind, so totals never
// go backwards (requests it finished after its last copy are lost with it).

import { DENSE_CODES, RequestCounters, type RequestCounter } from '../dataplane/telemetry.ts';
import type { Pool } from '../pool/pool.ts';
import type { ListenerView } from '../admin/runtime.ts';
import type { CounterSnapshot, WorkerStats } from './protocol.ts';

/** What a worker has counted so far. Runs once a second at most: allocation here is fine. */
export function takeStats(counters: RequestCounters, pools: Iterable<Pool>, listeners: readonly ListenerView[]): WorkerStats {
  const out: CounterSnapshot[] = [];
  for (const c of counters.values()) {
    const codes: number[] = [];
    for (let code = 0; code < DENSE_CODES; code++) if (c.codes[code] !== 0) codes.push(code, c.codes[code]);
    if (c.rareCodes !== null) for (const [code, n] of c.rareCodes) codes.push(code, n);
    out.push({ listener: c.listener, route: c.route, pool: c.pool, backend: c.backend, codes, buckets: c.buckets.slice(), sum: c.sum[0] });
  }
  const backends: [string, string, number, number, number][] = [];
  for (const p of pools) for (const b of p.backends) backends.push([p.name, b.name, b.active, b.requests, b.failures]);
  return { counters: out, backends, listeners: listeners.map((l) => [l.name, l.connections] as const) };
}

interface BackendTotals { requests: number; failures: number }

/** The primary's view of every worker's counts. */
export class ClusterStats {
  private readonly live: Map<number, WorkerStats>;
  /** Counts of workers that exited, kept so that totals never go backwards. */
  private readonly retiredCounters: RequestCounters;
  private readonly retiredBackends: Map<string, BackendTotals>;

  constructor() {
    this.live = new Map();
    this.retiredCounters = new RequestCounters();
    this.retiredBackends = new Map();
  }

  /** The latest copy from worker `id`. */
  update(id: number, stats: WorkerStats): void {
    this.live.set(id, stats);
  }

  /** Worker `id` exited: its last copy becomes part of the retired totals. */
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

  /** Writes the sum over all workers, live and retired, into `counters`, which nothing else counts into. */
  writeCounters(counters: RequestCounters): void {
    for (const c of counters.values()) clear(c);
    for (const r of this.retiredCounters.values()) addCounter(counters, r);
    for (const stats of this.live.values()) for (const s of stats.counters) addSnapshot(counters, s);
  }

  /** Writes active, requests and failures summed over the workers into the primary's backends. */
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

  /** Open client connections of a listener over the live workers. */
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
