import type { Backend } from '../backend.ts';
import type { Balancer } from '../balancer.ts';
import { SmoothSchedule } from './smooth-schedule.ts';

/**
 * Pools up to this size get the exact least-connections scan; bigger ones the sampled
 * choice. Measured with bench/micro/pick.ts: 16 backends scan in ~120 ns, a sample
 * takes ~35 ns at any size. Small pools are where the exact answer matters most (a
 * random challenger in a pool of three is often the candidate itself), and 0.1 µs is
 * still nothing next to a proxied request; past this the scan would keep growing.
 */
export const EXACT_SCAN_LIMIT = 16;

// xorshift32 needs a non-zero seed; any will do, the draws only pick challengers.
const SEED = 0x2545f491;

/**
 * Sends each request to the available backend with the fewest requests in flight
 * relative to its effective weight (active/weight), as nginx's least_conn does.
 *
 * Complexity, and why: `active` changes on every request start and end, in the data
 * plane, without telling the balancer, so no index (heap, buckets) over it can be
 * kept up to date; the only exact answer is to look at every backend, O(n) per pick.
 * That is what pools of up to EXACT_SCAN_LIMIT backends get: two passes over a short
 * array of objects, no allocation, and ties shared by nginx's smooth weighted
 * round-robin (with nothing in flight the policy degenerates to exactly the weighted
 * round-robin order, so weights hold under light load too).
 *
 * Bigger pools would pay for the scan on every request (microseconds at 1000
 * backends), so they get O(1) instead: the next backend of the smooth weighted cycle is
 * the candidate, and a challenger drawn at random from the same cycle (so by weight)
 * takes the request when it is less loaded. This is the "power of two choices" that
 * Envoy's LEAST_REQUEST and nginx's `random two least_conn` use: not the global
 * minimum, but a backend piling up requests gets almost none, and with equal load the
 * split is exactly the weighted one.
 */
export class LeastConnections implements Balancer {
  private readonly backends: readonly Backend[];
  /** Smooth round-robin state among tied backends (nginx's current_weight), by backend index. */
  private readonly current: Float64Array;
  /** The weighted cycle for pools above EXACT_SCAN_LIMIT; null for exact scans. */
  private readonly schedule: SmoothSchedule | null;
  private seed: number;
  /** The sampled path's cycle needs laying out again before the next pick. */
  private stale: boolean;

  constructor(backends: readonly Backend[]) {
    this.backends = backends;
    this.current = new Float64Array(backends.length);
    this.schedule = backends.length > EXACT_SCAN_LIMIT ? new SmoothSchedule() : null;
    this.seed = SEED;
    this.schedule?.build(backends);
    this.stale = false;
  }

  pick(): Backend | null {
    const schedule = this.schedule;
    if (schedule === null) return this.pickExact();
    if (this.stale) {
      // Deferred to the first pick after a burst of changes, as in SmoothWeightedRoundRobin.
      this.stale = false;
      schedule.build(this.backends);
    }
    return this.pickSampled(schedule);
  }

  rebuild(): void {
    // The exact scan reads availability and weights live and keeps its tie state by
    // backend, which survives availability changes as nginx's does; only the sampled
    // path has something to recompute.
    if (this.schedule !== null) this.stale = true;
  }

  private pickExact(): Backend | null {
    const backends = this.backends;
    const n = backends.length;
    let best = -1;
    let bestActive = 0;
    let bestWeight = 0;
    let ties = 0;
    for (let i = 0; i < n; i++) {
      const b = backends[i];
      const w = b.effectiveWeight;
      if (!(w > 0) || !b.isAvailable()) continue;
      const a = b.active;
      // a/w < bestActive/bestWeight, cross-multiplied: no division, exact for integers.
      const lhs = a * bestWeight;
      const rhs = bestActive * w;
      if (best === -1 || lhs < rhs) {
        best = i;
        bestActive = a;
        bestWeight = w;
        ties = 1;
      } else if (lhs === rhs) {
        ties++;
      }
    }
    if (ties <= 1) return best === -1 ? null : backends[best];

    const current = this.current;
    let total = 0;
    let chosen = best;
    let chosenValue = -Infinity;
    for (let i = best; i < n; i++) {
      const b = backends[i];
      const w = b.effectiveWeight;
      if (!(w > 0) || !b.isAvailable() || b.active * bestWeight !== bestActive * w) continue;
      const value = current[i] + w;
      current[i] = value;
      total += w;
      if (value > chosenValue) {
        chosen = i;
        chosenValue = value;
      }
    }
    current[chosen] -= total;
    return backends[chosen];
  }

  private pickSampled(schedule: SmoothSchedule): Backend | null {
    const first = schedule.next();
    if (first === null) return null;
    let x = this.seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.seed = x;
    const order = schedule.order;
    const challenger = schedule.members[order[(x >>> 0) % order.length]];
    if (challenger !== first && challenger.isAvailable()
      && challenger.active * first.effectiveWeight < first.active * challenger.effectiveWeight) {
      return challenger;
    }
    return first;
  }
}
