// The control plane's pools: Backend objects that carry no traffic, on which the active
// health checks and slow start run once for all data planes, and whose state the admin
// API shows and changes. What they decide reaches the data planes as BackendState
// messages (src/control/control-plane.ts); a data plane's passive ejections come back
// the other way and are only recorded here.

import type { BackendState } from '../channel/protocol.ts';
import type { Config } from '../config/types.ts';
import type { EventBus } from '../events.ts';
import type { Backend } from '../pool/backend.ts';
import type { Reinstater } from '../pool/health/active.ts';
import { HealthChecker } from '../pool/health/index.ts';
import { Pool } from '../pool/pool.ts';
import { SlowStart } from '../pool/slow-start.ts';

interface CheckedPool {
  readonly pool: Pool;
  stop(): Promise<void>;
}

/** The pools of the config in force, with their health checks. */
export class ControlPools {
  private entries: Map<string, CheckedPool>;
  private readonly bus: EventBus;
  private readonly reinstate: Reinstater;

  /** `reinstate` hears of a passed check of an ejected backend (the data planes end their ejections). */
  constructor(config: Config, bus: EventBus, reinstate: Reinstater) {
    this.bus = bus;
    this.reinstate = reinstate;
    this.entries = this.build(config, new Map());
  }

  /** Swaps in a new config's pools; backends they reuse keep their state and checks go on. */
  async apply(config: Config): Promise<void> {
    const old = this.entries;
    this.entries = this.build(config, old);
    const reused = new Set<Backend>();
    for (const e of this.entries.values()) for (const b of e.pool.backends) reused.add(b);
    for (const e of old.values()) {
      await e.stop();
      void e.pool.close(reused);
    }
  }

  pools(): ReadonlyMap<string, Pool> {
    const m = new Map<string, Pool>();
    for (const [name, e] of this.entries) m.set(name, e.pool);
    return m;
  }

  list(): Pool[] {
    return Array.from(this.entries.values(), (e) => e.pool);
  }

  backend(pool: string, name: string): Backend | undefined {
    return this.entries.get(pool)?.pool.byName.get(name);
  }

  /** Every backend's verdict, as a data plane starts from it. */
  states(): BackendState[] {
    const out: BackendState[] = [];
    for (const e of this.entries.values()) for (const b of e.pool.backends) out.push(backendState(b));
    return out;
  }

  /** True when every given pool (all when empty) has an available backend. */
  ready(pools: readonly string[]): boolean {
    const names = pools.length === 0 ? [...this.entries.keys()] : pools;
    for (const n of names) {
      const e = this.entries.get(n);
      if (e === undefined || !e.pool.hasAvailable()) return false;
    }
    return true;
  }

  /** Stops every check and lets go of the pools' upstream objects. */
  async close(): Promise<void> {
    for (const e of this.entries.values()) {
      await e.stop();
      await e.pool.close().catch(() => undefined);
    }
  }

  private build(config: Config, old: ReadonlyMap<string, CheckedPool>): Map<string, CheckedPool> {
    const entries = new Map<string, CheckedPool>();
    for (const [name, pc] of config.pools) {
      const pool = new Pool(pc, this.bus, old.get(name)?.pool.byName);
      // Without a checker nothing would ever bring a reused backend back.
      if (pc.healthCheck === null) {
        for (const b of pool.backends) b.setHealthy(true, 'health checks off');
      }
      const slowStart = new SlowStart(pool);
      const checker = new HealthChecker(pool, { outlier: this.reinstate, recovery: slowStart });
      checker.start();
      entries.set(name, {
        pool,
        async stop() {
          slowStart.stop();
          await checker.stop();
        },
      });
    }
    return entries;
  }
}

/** A backend's verdict as data planes receive it. */
export function backendState(b: Backend): BackendState {
  return { pool: b.pool, backend: b.name, healthy: b.healthy, admin: b.admin, weight: b.effectiveWeight, runtimeWeight: b.runtimeWeight };
}

/** True when two verdicts would change nothing in a data plane. */
export function sameState(a: BackendState | undefined, b: BackendState): boolean {
  return a !== undefined && a.healthy === b.healthy && a.admin === b.admin && a.weight === b.weight && a.runtimeWeight === b.runtimeWeight;
}
