// Pool health split between the processes of a cluster. The primary runs the active
// checks and slow start once, so N workers do not multiply check traffic; its Pools
// never carry requests. Workers apply what the primary decides and keep passive
// outlier detection local, because only they see the requests that fail.

import type { Backend } from '../pool/backend.ts';
import type { Pool } from '../pool/pool.ts';
import { HealthChecker, OutlierDetector, type PoolHealth } from '../pool/health/index.ts';
import type { Reinstater } from '../pool/health/active.ts';
import { SlowStart } from '../pool/slow-start.ts';
import type { BackendState } from './protocol.ts';

/** Health of a pool in the primary: active checks and slow start; a passed check of an ejected backend goes to `reinstate`. */
export function primaryHealth(reinstate: Reinstater): (pool: Pool) => PoolHealth {
  return (pool) => {
    // Without a checker nothing would ever bring a reused backend back.
    if (pool.config.healthCheck === null) {
      for (const b of pool.backends) b.setHealthy(true, 'health checks off');
    }
    const slowStart = new SlowStart(pool);
    const checker = new HealthChecker(pool, { outlier: reinstate, recovery: slowStart });
    checker.start();
    return {
      outlier: null,
      async stop() {
        slowStart.stop();
        await checker.stop();
      },
    };
  };
}

/** The primary's latest verdicts, by `pool\0backend`; a worker keeps one and applies it to every pool it builds. */
export class BackendStates {
  private readonly byKey: Map<string, BackendState>;

  constructor() {
    this.byKey = new Map();
  }

  /** Records the primary's verdict; returns the previous one, if any. */
  set(state: BackendState): BackendState | undefined {
    const key = `${state.pool}\u0000${state.backend}`;
    const old = this.byKey.get(key);
    this.byKey.set(key, state);
    return old;
  }

  get(pool: string, backend: string): BackendState | undefined {
    return this.byKey.get(`${pool}\u0000${backend}`);
  }

  /** Applies the primary's verdict to a worker's backend. The weight is taken only when the
   *  primary changed it, so that a local slow start (after a local ejection) is not undone
   *  by an unrelated update. */
  static apply(b: Backend, state: BackendState, previous: BackendState | undefined): void {
    b.setAdmin(state.admin, 'primary');
    b.setHealthy(state.healthy, 'primary health check');
    if (previous === undefined || previous.weight !== state.weight) b.setEffectiveWeight(state.weight, 'primary');
  }
}

/** Health of a pool in a worker: the primary's verdicts, local passive ejection and the slow start that follows it. */
export function workerHealth(states: BackendStates): (pool: Pool) => PoolHealth {
  return (pool) => {
    for (const b of pool.backends) {
      const s = states.get(pool.name, b.name);
      if (s !== undefined) BackendStates.apply(b, s, undefined);
    }
    if (pool.config.outlier === null) {
      for (const b of pool.backends) b.setEjected(false, 'outlier detection off');
    }
    const slowStart = new SlowStart(pool);
    const outlier = pool.config.outlier === null ? null : new OutlierDetector(pool, pool.config.outlier, slowStart);
    return {
      outlier,
      async stop() {
        slowStart.stop();
        outlier?.stop();
      },
    };
  };
}

/** The state of a primary backend as workers receive it. */
export function backendState(b: Backend): BackendState {
  return { pool: b.pool, backend: b.name, healthy: b.healthy, admin: b.admin, weight: b.effectiveWeight };
}
