// Retries of a failed BACKUP, FAULT or STOP hook. A failed `ip addr del` or a timed-out
// hook on demotion leaves the VIP on this host while the peer adds it: two holders
// without any partition, which only another run of the hook can end. One removal runs
// at a time per VIP; a new one (or a change of state) cancels the one before.

import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../log.ts';
import type { HookRunner, HookState } from './hook.ts';

export interface RemovalRetryOptions {
  readonly key: string;
  readonly hook: HookRunner;
  /** Longest pause between runs is this or 1 s, whichever is longer. */
  readonly leaseDuration: number;
  /** How long STOP is retried before giving up. */
  readonly stopRetryFor: number;
  readonly log: Logger;
  /** The state the VIP is in now: retries stop once it is no longer the failed one. */
  readonly current: () => HookState;
  /** The epoch the hook is run with. */
  readonly epoch: () => number;
}

/** First pause before a failed hook runs again; doubled per failure. */
const FIRST_PAUSE = 100;

const now = (): number => performance.now();

/** The removal retries of one VIP. */
export class RemovalRetry {
  private readonly opts: RemovalRetryOptions;
  private removal: AbortController | null;

  constructor(opts: RemovalRetryOptions) {
    this.opts = opts;
    this.removal = null;
  }

  /** Cancels the retries of an earlier removal and returns the handle of a new one. */
  begin(): AbortController {
    this.removal?.abort();
    this.removal = new AbortController();
    return this.removal;
  }

  /** Cancels whatever retries are under way. */
  cancel(): void {
    this.removal?.abort();
  }

  /**
   * Runs the failed `state` hook again, with backoff, until it succeeds or the state
   * changes (STOP: until stopRetryFor has passed).
   */
  async retry(state: HookState, removal: AbortController): Promise<void> {
    const o = this.opts;
    const deadline = state === 'STOP' ? now() + o.stopRetryFor : Infinity;
    const longest = Math.max(1000, o.leaseDuration);
    let pause = FIRST_PAUSE;
    for (let failures = 1; ; failures++) {
      if (removal.signal.aborted || o.current() !== state) return;
      if (now() + pause > deadline) {
        o.log.error({ vip: o.key, state, epoch: o.epoch(), failures }, `ha: ${o.key}: ${state} hook failed ${failures} times, giving up at the stop deadline: the VIP may still be on this host`);
        return;
      }
      o.log.warn({ vip: o.key, state, epoch: o.epoch(), failures, retryInMs: pause }, `ha: ${o.key}: ${state} hook failed (the VIP may still be on this host): running it again in ${pause} ms`);
      try {
        await sleep(pause, undefined, { signal: removal.signal });
      } catch {
        return;
      }
      if (o.current() !== state) return;
      const outcome = await o.hook.run(state, o.epoch());
      if (outcome !== 'failed') {
        if (outcome === 'ok') o.log.info({ vip: o.key, state, epoch: o.epoch(), attempt: failures + 1 }, `ha: ${o.key}: ${state} hook succeeded on attempt ${failures + 1}`);
        return;
      }
      pause = Math.min(pause * 2, longest);
    }
  }
}
