// What the etcd store knows of one VIP key, and the two waits built on it: a holder
// handing the key over waits for its heir to serve; a standby waits for the holder's
// next write (its "beat") and treats the key as free once none came for a lease duration.

import type { Lease } from '../../lease-store.ts';
import type { KeyValue } from './client.ts';
import type { Candidacy, Holding } from './keys.ts';
import type { OwnLease } from './own-lease.ts';

export interface KeyState {
  readonly key: string;
  kv: KeyValue | null;
  holding: Holding | null;
  /** Revision of the last change applied to kv (put or delete). */
  rev: number;
  epoch: number;
  readonly candidates: Map<string, Candidacy>;
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
 * Resolves when the heir serves (or the key is gone, the heir withdrew, the offer was
 * taken back) or after `timeout` ms.
 */
export function handedOver(ks: KeyState, self: string, heir: string, timeout: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const check = () => {
      const h = ks.holding;
      const done = h === null ? true : h.n !== self ? h.s : !ks.candidates.has(heir) || h.o !== heir;
      if (done) finish();
    };
    const finish = () => {
      ks.onChange = null;
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(finish, timeout);
    ks.onChange = check;
    check();
  });
}

/**
 * A holder writes its key on every renewal, and stops acting as holder a lease duration
 * after its last successful write was sent (own-lease.ts). So a standby that has seen no
 * write for a lease duration plus `OVERDUE_MARGIN_MS`, counted from when the last one
 * reached it (never before it was sent), may take the key over, in a transaction that
 * holds only if the key is still at the revision it saw: the holder cannot renew in
 * between. etcd would void the key only on its own lease expiry, whose loop runs every
 * 500 ms after a TTL rounded up to whole seconds.
 */
export const OVERDUE_MARGIN_MS = 50;

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
  return ks.holding !== null && ks.holding.n !== self && ks.seenAt > 0 && t - ks.seenAt > window + OVERDUE_MARGIN_MS;
}
