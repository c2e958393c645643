// How many retries a pool may make, as Finagle's and Linkerd's retry budgets count them:
// over the last WINDOW_SECONDS, retries may be `percent` of the requests plus a reserve of
// MIN_PER_SECOND a second. A pool whose backends keep failing thus adds at most that share
// to its load, while a burst, such as the requests in flight on a backend that dies at
// once, is retried whole out of what the pool's traffic earned before. (Envoy's budget,
// a share of the requests in flight at this moment, turned such a burst away: with three
// backends a third of the requests in flight fail together, over its 20 %.)
//
// Counted per data plane, in one-second slots: a request costs one array increment, a
// retry one sum over the slots.

const WINDOW_SECONDS = 10;
/** Retries a second the budget allows whatever the traffic, so a quiet pool can retry too. */
export const MIN_RETRIES_PER_SECOND = 10;

export class RetryBudget {
  private readonly percent: number;
  private readonly requests = new Uint32Array(WINDOW_SECONDS);
  private readonly retries = new Uint32Array(WINDOW_SECONDS);
  /** The second (of performance.now()) the current slot counts. */
  private second = 0;

  constructor(percent: number) {
    this.percent = percent;
  }

  /** A request arrived at `now` (ms, performance.now()). */
  request(now: number): void {
    this.requests[this.slot(now)]++;
  }

  /** Takes one retry from the budget at `now`; false when it is spent. */
  tryRetry(now: number): boolean {
    const slot = this.slot(now);
    let requests = 0;
    let retries = 0;
    for (let i = 0; i < WINDOW_SECONDS; i++) {
      requests += this.requests[i];
      retries += this.retries[i];
    }
    if (retries >= (requests * this.percent) / 100 + MIN_RETRIES_PER_SECOND * WINDOW_SECONDS) return false;
    this.retries[slot]++;
    return true;
  }

  /**
   * The slot of `now`'s second; slots of the seconds skipped since are emptied. A time
   * older than the current second (a request's arrival, counted late) goes to the current
   * slot: the window never moves back.
   */
  private slot(now: number): number {
    const second = Math.floor(now / 1000);
    if (second < this.second) return this.second % WINDOW_SECONDS;
    if (second !== this.second) {
      const passed = Math.min(second - this.second, WINDOW_SECONDS);
      for (let i = 1; i <= passed; i++) {
        const s = (this.second + i) % WINDOW_SECONDS;
        this.requests[s] = 0;
        this.retries[s] = 0;
      }
      this.second = second;
    }
    return second % WINDOW_SECONDS;
  }
}
