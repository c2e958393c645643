// When a key changes hands, the same for every lease store: a candidate takes a free key
// only when it is the best ready candidate and has waited long enough to know the others
// (warm-up); it takes a held key only when the holder offered it (make-before-break) or
// fell silent past its lease; it asks a lower-priority holder for the key by preempting,
// and that holder offers it once it has let its connections wind down. A holder that
// releases offers the key to the best ready candidate and lets go once that one serves.
// A store supplies the facts (who holds, who is present, what its clock says) and the
// medium's operations (create-if-absent, rewrite, delete, watch); the decisions are here.

import { bestCandidate, type Candidate } from './candidates.ts';
import { systemClock, type Clock } from './clock.ts';
import type { Claim } from './lease-store.ts';

/** What a store knows of a key when a node asks for it. */
export interface KeyFacts {
  readonly holder: string | null;
  /** The holder's priority; 0 when free. */
  readonly priority: number;
  readonly serving: boolean;
  readonly offeredTo: string | null;
  /** The holder has been silent for longer than its lease, as this node counts it (see silentTooLong). */
  readonly overdue: boolean;
  /** This candidate has been present long enough to know the other candidates. */
  readonly warm: boolean;
}

/**
 * What a node asking for a key does: `keep` it (it holds it already), `take` it (free),
 * `take-offer` (offered to it), `take-over` (its holder is overdue), `ask` the holder for
 * it (preempt), or `wait`.
 */
export type Move = 'keep' | 'take' | 'take-offer' | 'take-over' | 'ask' | 'wait';

/** The move of `claim` on a key with `facts`, given the other present `candidates`. */
export function nextMove(facts: KeyFacts, claim: Claim, candidates: Iterable<Candidate>): Move {
  if (facts.holder === claim.node) return 'keep';
  const outranked = () => bestCandidate(candidates, claim.node, claim.priority) !== null;
  if (facts.holder === null) return facts.warm && !outranked() ? 'take' : 'wait';
  if (facts.overdue) return outranked() ? 'wait' : 'take-over';
  if (facts.offeredTo === claim.node) return 'take-offer';
  if (claim.preempt && claim.priority > facts.priority && facts.serving) return 'ask';
  return 'wait';
}

/** Whom a releasing holder offers the key to: the best ready candidate, once it serves the key itself; null: release at once. */
export function heirOf(serving: boolean, candidates: Iterable<Candidate>, self: string): string | null {
  return serving ? bestCandidate(candidates, self, 0) : null;
}

/** A holder's state as far as an offer to a preempting candidate goes. */
export interface OfferState {
  readonly serving: boolean;
  readonly releasing: boolean;
  /** An offer waits for the holder's connections to wind down. */
  readonly offering: boolean;
  readonly offeredTo: string | null;
}

/** A holder offers its key to a preempting candidate only while it serves it and no offer or release is under way. */
export function mayOffer(s: OfferState): boolean {
  return s.serving && !s.releasing && !s.offering && s.offeredTo === null;
}

/**
 * The holder's side of preemption: waits for `beforeOffer` (the holder winds the VIP's
 * connections down first), then makes the offer with `offer()` if `stillMay()`: the key
 * may have changed meanwhile. One offer at a time per key (`s.offering`).
 */
export async function offerAfter(s: { offering: boolean }, beforeOffer: () => Promise<void> | undefined, stillMay: () => boolean, offer: () => unknown): Promise<void> {
  if (s.offering) return;
  s.offering = true;
  await beforeOffer()?.catch(() => {});
  s.offering = false;
  if (stillMay()) await offer();
}

/** An offer to a preempting candidate not taken by `offerUntil` is withdrawn; a release's offer ends with the release. */
export function offerLapsed(offeredTo: string | null, releasing: boolean, offerUntil: number, t: number): boolean {
  return offeredTo !== null && !releasing && t > offerUntil;
}

/**
 * A holder handing its key to `heir` may let go once the key is gone, or the heir
 * serves it (make-before-break), or the offer is off (taken back, or the heir left).
 */
export function handoverSettled(view: { readonly holder: string | null; readonly serving: boolean; readonly offeredTo: string | null }, self: string, heir: string | null, heirPresent = true): boolean {
  if (view.holder === null) return true;
  if (view.holder !== self) return view.serving;
  return view.offeredTo !== heir || !heirPresent;
}

/** A single wake-up slot a store calls on every change of a key. */
export interface ChangeSlot {
  onChange: (() => void) | null;
}

/** Resolves once `settled()` holds (checked now and on every change) or after `timeout` ms. */
export function settle(slot: ChangeSlot, settled: () => boolean, timeout: number, clock: Clock = systemClock): Promise<void> {
  return new Promise<void>((resolve) => {
    const finish = () => {
      slot.onChange = null;
      clock.clearTimeout(timer);
      resolve();
    };
    const timer = clock.setTimeout(finish, timeout);
    slot.onChange = () => {
      if (settled()) finish();
    };
    slot.onChange();
  });
}

/**
 * A holder writes (or advertises) its key on every renewal and stops acting as holder a
 * lease duration after its last successful write was sent. So a standby that has seen
 * nothing of the holder for a lease duration plus this margin, counted from when the
 * last write reached it (never before it was sent), may take the key over, in a
 * transaction that holds only if the key is still as it saw it.
 */
export const OVERDUE_MARGIN_MS = 50;

/** True when a holder last seen at `seenAt` is overdue at `t` (see OVERDUE_MARGIN_MS). */
export function silentTooLong(seenAt: number, t: number, leaseDuration: number): boolean {
  return seenAt > 0 && t - seenAt > leaseDuration + OVERDUE_MARGIN_MS;
}

/**
 * The claim a node makes for a VIP at `t`: it asks a lower-priority holder for the key
 * (preempt) only once it has been ready for the VIP's preempt delay, so that a node that
 * just came back does not take the VIP before it has shown it stays up.
 */
export function claimAt(node: string, priority: number, vip: { readonly preempt: boolean; readonly preemptDelay: number }, readySince: number | null, t: number): Claim {
  return { node, priority, preempt: vip.preempt && t - (readySince ?? t) >= vip.preemptDelay };
}
