import type { Backend } from '../backend.ts';
import type { Balancer } from '../balancer.ts';
import { SmoothSchedule } from './smooth-schedule.ts';

/**
 * nginx's smooth weighted round-robin over the available backends, by effective
 * weight: weights 5,1,1 give a,a,b,a,c,a,a. The cycle is laid out ahead of time, so
 * pick() is O(1) in the number of backends and allocates nothing: an array read, an
 * integer increment and one availability check.
 */
export class SmoothWeightedRoundRobin implements Balancer {
  private readonly backends: readonly Backend[];
  private readonly schedule: SmoothSchedule;
  private stale: boolean;

  constructor(backends: readonly Backend[]) {
    this.backends = backends;
    this.schedule = new SmoothSchedule();
    this.schedule.build(backends);
    this.stale = false;
  }

  pick(): Backend | null {
    if (this.stale) this.refresh();
    return this.schedule.next();
  }

  rebuild(): void {
    // Laid out at the next pick rather than now: a health round or a slow-start tick
    // changes many backends in one turn of the event loop, and one layout covers them
    // all (a big pool's layout takes a millisecond or so). The next pick is the first
    // moment the change can matter, so it still takes effect at once.
    this.stale = true;
  }

  private refresh(): void {
    this.stale = false;
    this.schedule.build(this.backends);
  }
}
