import type { Backend } from './backend.ts';
import type { Pool } from './pool.ts';

/** Told when a backend becomes available again (came up, or was un-ejected). */
export interface RecoveryListener {
  recovered(backend: Backend): void;
}

/** Share of the configured weight a recovering backend starts with. */
const START_FRACTION = 0.1;
/** Weight updates are coarse: a tenth of the ramp, but not more often than this. */
const MIN_STEP_MS = 250;

// Ramp start times (performance.now()) live beside the Backend rather than in a
// SlowStart, so that a ramp under way survives a config reload: the new pool reuses
// the Backend object and its SlowStart picks the ramp up where the old one left it.
const ramps = new WeakMap<Backend, number>();

/**
 * HAProxy-style slow start for one pool: a backend that comes back gets a small share
 * of traffic first (10% of its weight, at least 1) and its full weight after
 * `slowStart` ms, so a cold cache or JIT is not hit by its whole share at once.
 * Backends available at process start are not ramped.
 */
export class SlowStart implements RecoveryListener {
  private readonly pool: Pool;
  private readonly duration: number;
  private readonly step: number;
  private readonly ramping = new Set<Backend>();
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(pool: Pool) {
    this.pool = pool;
    this.duration = pool.config.slowStart;
    this.step = Math.max(MIN_STEP_MS, Math.floor(this.duration / 10));
    // Adopt ramps begun under the previous config, or finish them when slow start is off now.
    for (const b of pool.backends) {
      if (!ramps.has(b)) continue;
      if (this.duration > 0) this.ramping.add(b);
      else finish(b);
    }
    if (this.ramping.size > 0) {
      this.tick();
      this.schedule();
    }
  }

  /** Begins (or restarts) the ramp of a backend that just became available. */
  recovered(backend: Backend): void {
    if (this.stopped || this.duration <= 0) return;
    if (!backend.healthy || backend.ejected || backend.targetWeight <= 0) return;
    if (!this.pool.byName.has(backend.name)) return;
    ramps.set(backend, performance.now());
    this.ramping.add(backend);
    backend.setEffectiveWeight(weightAt(backend.targetWeight, 0), 'slow start');
    this.schedule();
  }

  /** Stops the timer; ramps under way are left for the next pool's SlowStart to adopt. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  private schedule(): void {
    if (this.timer !== null || this.stopped) return;
    this.timer = setInterval(() => this.tick(), this.step);
    this.timer.unref();
  }

  private tick(): void {
    const now = performance.now();
    for (const b of this.ramping) {
      const started = ramps.get(b);
      const elapsed = started === undefined ? this.duration : now - started;
      if (elapsed >= this.duration) {
        this.ramping.delete(b);
        finish(b);
      } else {
        b.setEffectiveWeight(weightAt(b.targetWeight, elapsed / this.duration), 'slow start');
      }
    }
    if (this.ramping.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }
}

/** True while slow start ramps this backend's effective weight up. */
export function ramping(b: Backend): boolean {
  return ramps.has(b);
}

/** Effective weight at `progress` (0..1) of the ramp: from 10% (at least 1) up to `weight`. */
export function weightAt(weight: number, progress: number): number {
  const w = Math.round(weight * (START_FRACTION + (1 - START_FRACTION) * Math.min(1, Math.max(0, progress))));
  return Math.min(weight, Math.max(1, w));
}

function finish(b: Backend): void {
  ramps.delete(b);
  b.setEffectiveWeight(b.targetWeight, 'slow start done');
}
