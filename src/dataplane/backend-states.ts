// Pool health as a data plane runs it. The control plane runs the active checks and
// slow start once (src/control/pools.ts), so N data planes do not multiply check
// traffic; a data plane applies the verdicts it is sent and keeps passive outlier
// detection local, because only it sees the requests that fail.

import type { BackendState } from '../channel/protocol.ts';
import type { Backend } from '../pool/backend.ts';
import { OutlierDetector, type PoolHealth } from '../pool/health/index.ts';
import type { Pool } from '../pool/pool.ts';
import { SlowStart } from '../pool/slow-start.ts';

/** The control plane's latest verdicts, by `pool\0backend`; applied to every pool a data plane builds. */
export class BackendStates {
  private readonly byKey: Map<string, BackendState>;

  constructor() {
    this.byKey = new Map();
  }

  /** Records a verdict; returns the previous one, if any. */
  set(state: BackendState): BackendState | undefined {
    const key = `${state.pool}\u0000${state.backend}`;
    const old = this.byKey.get(key);
    this.byKey.set(key, state);
    return old;
  }

  get(pool: string, backend: string): BackendState | undefined {
    return this.byKey.get(`${pool}\u0000${backend}`);
  }

  /** Applies a verdict to a data plane's backend. The weight is taken only when the
   *  control plane changed it, so that a local slow start (after a local ejection) is
   *  not undone by an unrelated update. */
  static apply(b: Backend, state: BackendState, previous: BackendState | undefined): void {
    b.runtimeWeight = state.runtimeWeight ?? null;
    b.setAdmin(state.admin, 'control plane');
    b.setHealthy(state.healthy, 'control plane health check');
    if (previous === undefined || previous.weight !== state.weight) b.setEffectiveWeight(state.weight, 'control plane');
  }
}

/** Health of a pool in a data plane: the control plane's verdicts, local passive ejection and the slow start that follows it. */
export function dataPlaneHealth(states: BackendStates): (pool: Pool) => PoolHealth {
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
