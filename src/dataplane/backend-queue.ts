// Requests waiting for room at a pool's backends. A backend has room while it has fewer
// requests in flight than its maxConnections; one at its limit is passed over while
// another has room, and when none has, the request waits here (FIFO, at most
// `queueSize`, each for at most `queueTimeout`) instead of piling into undici's
// unbounded per-backend queue. Each finished request wakes the oldest waiter.

/** A request that can wait: tries again when woken, gives up when its time is out. */
export interface Waiter {
  /** The client went away or the request was answered: skip it. */
  readonly done: boolean;
  /** Room may have appeared: pick again (and wait again if there is still none). */
  admit(): void;
  /** Waited for the whole queue timeout. */
  expire(): void;
}

export class BackendQueue {
  private readonly waiters: Waiter[];
  private readonly timers: Map<Waiter, NodeJS.Timeout>;
  /** Requests that gave up after the queue timeout, for metrics. */
  expired: number;

  constructor() {
    this.waiters = [];
    this.timers = new Map();
    this.expired = 0;
  }

  get length(): number {
    return this.waiters.length;
  }

  /** Queues `w` unless `size` are waiting already; false when it was refused. */
  wait(w: Waiter, size: number, timeoutMs: number): boolean {
    if (this.waiters.length >= size) return false;
    this.waiters.push(w);
    if (!this.timers.has(w)) {
      this.timers.set(w, setTimeout(() => {
        this.timers.delete(w);
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        if (!w.done) {
          this.expired++;
          w.expire();
        }
      }, timeoutMs));
    }
    return true;
  }

  /** A slot freed up: the oldest live waiter tries again. */
  wake(): void {
    while (this.waiters.length > 0) {
      const w = this.waiters.shift()!;
      if (w.done) {
        this.forget(w);
        continue;
      }
      w.admit();
      return;
    }
  }

  /** `w` was served or left: its timer stops, and a client that left no longer counts as waiting. */
  forget(w: Waiter): void {
    const t = this.timers.get(w);
    if (t === undefined) return;
    clearTimeout(t);
    this.timers.delete(w);
    const i = this.waiters.indexOf(w);
    if (i >= 0) this.waiters.splice(i, 1);
  }
}
