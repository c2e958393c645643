import type { Pool } from '../pool.ts';
import { SlowStart } from '../slow-start.ts';
import { HealthChecker } from './active.ts';
import { OutlierDetector } from './passive.ts';

export { HealthChecker } from './active.ts';
export { OutlierDetector } from './passive.ts';
export type { FailureKind } from './passive.ts';

/** The health machinery of one running pool. */
export interface PoolHealth {
  /** Stops checks and timers; backend state stays for the next config's pool to take over. */
  stop(): Promise<void>;
  /** What the forwarder reports request outcomes to; null when the pool has no `outlier` settings. */
  readonly outlier: OutlierDetector | null;
}

/**
 * Starts active checks, passive ejection and slow start for `pool`. On a reload, start
 * the new pool's health and then stop the old one's: Backend objects the new pool
 * reuses keep their health, check streaks, ejections and slow-start ramps.
 */
export function startPoolHealth(pool: Pool): PoolHealth {
  const cfg = pool.config;
  // Without a checker or detector nothing would ever bring a reused backend back.
  if (cfg.healthCheck === null) {
    for (const b of pool.backends) b.setHealthy(true, 'health checks off');
  }
  if (cfg.outlier === null) {
    for (const b of pool.backends) b.setEjected(false, 'outlier detection off');
  }
  const slowStart = new SlowStart(pool);
  const outlier = cfg.outlier === null ? null : new OutlierDetector(pool, cfg.outlier, slowStart);
  const checker = new HealthChecker(pool, { outlier, recovery: slowStart });
  checker.start();
  return {
    outlier,
    async stop() {
      slowStart.stop();
      outlier?.stop();
      await checker.stop();
    },
  };
}
