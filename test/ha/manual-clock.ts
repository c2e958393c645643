// A clock that moves only when a test moves it: timers fire in order of their due time,
// and every promise chain they start settles before the next one fires.

import type { Clock, TimerHandle } from '../../src/ha/clock.ts';

interface Timer {
  readonly id: number;
  readonly at: number;
  readonly fn: () => void;
}

/** Lets queued microtasks and immediates run (the store's and elector's promise chains). */
export const settleTasks = async (rounds = 5): Promise<void> => {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
};

export class ManualClock implements Clock {
  private t: number;
  private seq: number;
  private readonly timers: Map<number, Timer>;

  constructor(start = 1000) {
    this.t = start;
    this.seq = 0;
    this.timers = new Map();
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = ++this.seq;
    this.timers.set(id, { id, at: this.t + Math.max(0, ms), fn });
    return { id } as unknown as TimerHandle;
  }

  clearTimeout(handle: TimerHandle): void {
    this.timers.delete((handle as unknown as { id: number }).id);
  }

  /** Moves the clock `ms` forward, firing every timer due on the way, in order. */
  async advance(ms: number): Promise<void> {
    const target = this.t + ms;
    await settleTasks();
    for (let fired = 0; fired < 100_000; fired++) {
      let next: Timer | null = null;
      for (const timer of this.timers.values()) if (timer.at <= target && (next === null || timer.at < next.at || (timer.at === next.at && timer.id < next.id))) next = timer;
      if (next === null) break;
      this.timers.delete(next.id);
      this.t = Math.max(this.t, next.at);
      next.fn();
      await settleTasks();
    }
    this.t = target;
    await settleTasks();
  }
}
