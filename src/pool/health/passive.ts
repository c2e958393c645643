import type { OutlierConfig } from '../../config/types.ts';
import type { Backend } from '../backend.ts';
import type { Pool } from '../pool.ts';
import type { RecoveryListener } from '../slow-start.ts';

/** How a proxied request failed, as the forwarder saw it. */
export type FailureKind = 'connect' | 'reset' | 'timeout' | '5xx';

/** Ejection history of one backend; kept beside the Backend so that it survives a reload. */
interface Ejection {
  /** Ejections in a row; the next one lasts ejectFor × 2^count, up to maxEjectFor. */
  count: number;
  /** performance.now() at the last ejection, and when it is due to end (0: not ejected by us). */
  since: number;
  until: number;
  /** performance.now() when the last ejection ended; quiet time since then decays `count`. */
  ended: number;
}

const history = new WeakMap<Backend, Ejection>();

/**
 * Passive health of one pool (Envoy's consecutive-failure outlier detection): the
 * forwarder reports every proxied request's outcome, and `consecutiveFailures` failures
 * in a row eject the backend for `ejectFor`, doubling with each repeated ejection up to
 * `maxEjectFor`. Each `ejectFor` of quiet time after an ejection ends halves the next
 * one again, so a backend that failed once long ago starts from `ejectFor`.
 *
 * At most `maxEjectedPercent` of the pool's backends are ejected at once, except that,
 * as in Envoy, one backend may always be ejected when none is (unless the percentage is
 * 0): a pool of two with 10% can still take out its broken half. A backend that cannot
 * be ejected keeps failing requests rather than draining the pool of everything.
 *
 * An ejected backend comes back when its time runs out (one timer per ejection) or as
 * soon as an active health check that started after the ejection passes.
 */
export class OutlierDetector {
  private readonly pool: Pool;
  private readonly config: OutlierConfig;
  private readonly threshold: number;
  private readonly on5xx: boolean;
  private readonly recovery: RecoveryListener | null;
  private readonly timers = new Map<Backend, NodeJS.Timeout>();
  private stopped = false;

  constructor(pool: Pool, config: OutlierConfig, recovery: RecoveryListener | null = null) {
    this.pool = pool;
    this.config = config;
    this.threshold = Math.max(1, config.consecutiveFailures);
    this.on5xx = config.on5xx;
    this.recovery = recovery;
    // Take over ejections made under the previous config: their timers died with it.
    const now = performance.now();
    for (const b of pool.backends) {
      if (!b.ejected) continue;
      const h = history.get(b);
      this.arm(b, h === undefined ? 0 : Math.max(0, h.until - now));
    }
  }

  /** A proxied request to `backend` got a response it counts as good. Per request: O(1), allocates nothing. */
  onSuccess(backend: Backend): void {
    backend.consecutiveFailures = 0;
  }

  /**
   * A proxied request to `backend` failed. Call it for every 5xx response too: without
   * `on5xx` a 5xx proves the backend reachable and counts as a success. Per request:
   * O(1), allocates nothing.
   */
  onFailure(backend: Backend, kind: FailureKind): void {
    if (kind === '5xx' && !this.on5xx) {
      backend.consecutiveFailures = 0;
      return;
    }
    if (++backend.consecutiveFailures < this.threshold || backend.ejected || this.stopped) return;
    this.eject(backend);
  }

  /** An active check that began at `checkStarted` (performance.now()) passed: end an ejection made before it. */
  reinstate(backend: Backend, checkStarted: number): void {
    if (!backend.ejected || this.stopped) return;
    const h = history.get(backend);
    if (h !== undefined && checkStarted < h.since) return;
    this.release(backend, 'active check passed');
  }

  /** Ejections in a row of `backend` (0 when it has a clean record), for the API and tests. */
  static ejections(backend: Backend): number {
    return history.get(backend)?.count ?? 0;
  }

  /** Cancels the ejection timers; the next pool's detector adopts the ejections. */
  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private eject(backend: Backend): void {
    if (!this.mayEject()) return;
    const now = performance.now();
    let h = history.get(backend);
    if (h === undefined) {
      h = { count: 0, since: 0, until: 0, ended: now };
      history.set(backend, h);
    } else if (h.count > 0 && this.config.ejectFor > 0) {
      const quiet = Math.floor((now - h.ended) / this.config.ejectFor);
      h.count = Math.max(0, h.count - quiet);
    }
    const ms = Math.min(this.config.maxEjectFor, this.config.ejectFor * 2 ** Math.min(h.count, 30));
    h.count++;
    h.since = now;
    h.until = now + ms;
    backend.consecutiveFailures = 0;
    backend.setEjected(true, `${this.threshold} consecutive failures; ejected for ${ms}ms`);
    this.arm(backend, ms);
  }

  private mayEject(): boolean {
    const pct = this.config.maxEjectedPercent;
    if (pct <= 0) return false;
    // Every ejection we hold has a timer, so the map's size counts them in O(1).
    const ejected = this.timers.size;
    return ejected === 0 || (ejected + 1) * 100 <= pct * this.pool.backends.length;
  }

  private arm(backend: Backend, ms: number): void {
    const old = this.timers.get(backend);
    if (old !== undefined) clearTimeout(old);
    const t = setTimeout(() => this.expire(backend), ms);
    t.unref();
    this.timers.set(backend, t);
  }

  private expire(backend: Backend): void {
    this.timers.delete(backend);
    if (!this.stopped && backend.ejected) this.release(backend, 'ejection time over');
  }

  private release(backend: Backend, reason: string): void {
    const t = this.timers.get(backend);
    if (t !== undefined) clearTimeout(t);
    this.timers.delete(backend);
    const h = history.get(backend);
    if (h !== undefined) {
      h.ended = performance.now();
      h.until = 0;
    }
    backend.consecutiveFailures = 0;
    backend.setEjected(false, reason);
    this.recovery?.recovered(backend);
  }
}
