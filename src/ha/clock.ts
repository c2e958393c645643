// The time an elector and the in-memory store run on: the process's monotonic clock and
// timers in production, a clock the test moves by hand in the elector tests.

/** An opaque timer handle. */
export type TimerHandle = { readonly __timer?: never } | NodeJS.Timeout;

export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** performance.now() and Node's timers. */
export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};
