// What the etcd store knows of one VIP key, and the wait built on it: a standby waits
// for the holder's next write (its "beat") and treats the key as free once none came for
// a lease duration (the rule is in src/ha/handover.ts).

import type { Candidate } from '../../candidates.ts';
import { OVERDUE_MARGIN_MS, silentTooLong } from '../../handover.ts';
import type { Lease } from '../../lease-store.ts';
import type { KeyValue } from './client.ts';
import type { Holding } from './keys.ts';
import type { OwnLease } from './own-lease.ts';

export interface KeyState {
  readonly key: string;
  kv: KeyValue | null;
  holding: Holding | null;
  /** Revision of the last change applied to kv (put or delete). */
  rev: number;
  epoch: number;
  readonly candidates: Map<string, Candidate>;
  own: OwnLease | null;
  claim: { priority: number; preempt: boolean; at: number; since: number; written: string | null } | null;
  readonly listeners: Set<(lease: Lease) => void>;
  lastSignature: string;
  onChange: (() => void) | null;
  /** When this node last saw the key written by another holder (its watch delivered it). */
  seenAt: number;
  /** Fires when that holder's next write is overdue. */
  overdueTimer: NodeJS.Timeout | null;
  /** This node's writes of the key, one at a time (each compares the revision the last left). */
  writes: Promise<void>;
  /** Writes queued or in flight. */
  queued: number;
}

export function newKeyState(key: string): KeyState {
  return {
    key, kv: null, holding: null, rev: 0, epoch: 0, candidates: new Map(), own: null, claim: null,
    listeners: new Set(), lastSignature: '', onChange: null, seenAt: 0, overdueTimer: null, writes: Promise.resolve(), queued: 0,
  };
}

/**
 * etcd would void a silent holder's key only on its own lease expiry, whose loop runs
 * every 500 ms after a TTL rounded up to whole seconds; the others take it over sooner,
 * as every store does (see OVERDUE_MARGIN_MS), in a transaction on the revision they saw.
 */
/** Notes a write of the key by another holder; `wake` runs once the next one is overdue. */
export function sawBeat(ks: KeyState, window: number, wake: () => void): void {
  ks.seenAt = performance.now();
  if (ks.overdueTimer !== null) clearTimeout(ks.overdueTimer);
  ks.overdueTimer = setTimeout(() => {
    ks.overdueTimer = null;
    wake();
  }, window + OVERDUE_MARGIN_MS + 1);
  ks.overdueTimer.unref();
}

export function forgetBeat(ks: KeyState): void {
  if (ks.overdueTimer !== null) clearTimeout(ks.overdueTimer);
  ks.overdueTimer = null;
}

/** True when another node holds the key and its next write is overdue at `t`. */
export function overdue(ks: KeyState, self: string, window: number, t: number): boolean {
  return ks.holding !== null && ks.holding.n !== self && silentTooLong(ks.seenAt, t, window);
}
