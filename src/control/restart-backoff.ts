// When to start the replacement of a worker that died: at once, unless workers keep
// dying young (a crash at start, e.g. a config the data plane cannot apply), when each
// replacement waits twice as long as the one before, up to a bound.

/** A worker that dies younger than this counts as crashing at start; replacements then back off. */
const YOUNG_MS = 5000;
const MAX_BACKOFF_MS = 10_000;

export class RestartBackoff {
  /** Workers in a row that died young. */
  private crashes: number;

  constructor() {
    this.crashes = 0;
  }

  /** Milliseconds to wait before replacing a worker started at `since` (performance.now()) that died now. */
  delay(since: number): number {
    const young = performance.now() - since < YOUNG_MS;
    this.crashes = young ? this.crashes + 1 : 0;
    return this.crashes <= 1 ? 0 : Math.min(MAX_BACKOFF_MS, 100 * 2 ** this.crashes);
  }
}
