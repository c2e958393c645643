import type { Backend } from '../backend.ts';
import type { Balancer } from '../balancer.ts';
import { SmoothSchedule } from './smooth-schedule.ts';

/**
 * nginx's smooth weighted round-robin over the available backends, by effective
 * weight: weights 5,1,1 give a,a,b,a,c,a,a. The cycle is computed in rebuild(), so pick()
 * is O(1) in the number of backends and allocates nothing: an array read, an integer
 * increment and one availability check.
 */
export class SmoothWeightedRoundRobin implements Balancer {
  private readonly backends: readonly Backend[];
  private readonly schedule: SmoothSchedule;

  constructor(backends: readonly Backend[]) {
    this.backends = backends;
    this.schedule = new SmoothSchedule();
    this.schedule.build(backends);
  }

  pick(): Backend | null {
    return this.schedule.next();
  }

  rebuild(): void {
    this.schedule.build(this.backends);
  }
}
