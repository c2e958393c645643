// What the peer store knows of each key and each peer: plain state and pure functions
// over it, apart from the UDP, timers and listeners that store.ts drives. Who wins a key
// is decided in src/ha/candidates.ts and src/ha/handover.ts, as for every store.

import type { HaNodeConfig } from '../../../config/types.ts';
import type { Candidate } from '../../candidates.ts';
import { freeLease, type Lease } from '../../lease-store.ts';
import type { SenderGuard } from './wire.ts';

export interface Candidacy {
  priority: number;
  at: number;
}

export interface KeyState {
  readonly key: string;
  holder: string | null;
  holderBoot: number;
  epoch: number;
  priority: number;
  /** Local monotonic time the lease runs out. */
  expiresAt: number;
  serving: boolean;
  offeredTo: string | null;
  offerUntil: number;
  /** Highest epoch heard for this key from anyone. */
  maxEpoch: number;
  /** Our own candidacy: priority and when acquire was last called (-Infinity: withdrawn). */
  claimPriority: number;
  claimAt: number;
  /** Set while release() hands this key over. */
  releasing: boolean;
  readonly candidates: Map<string, Candidacy>;
  /** `node:boot:epoch` of the last conflicting holder we won against; one re-announce per conflict. */
  lastConflict: string;
  takeSentAt: number;
  expiryTimer: NodeJS.Timeout | null;
  readonly listeners: Set<(lease: Lease) => void>;
  /** Holder, epoch, serving and offer of the last view sent to listeners. */
  lastSignature: string;
  /** Wakes release() when the view changes. */
  onChange: (() => void) | null;
  /** Set while a preemption's offer waits for the holder to be ready to let the key go. */
  offering: boolean;
}

export interface PeerState {
  readonly config: HaNodeConfig;
  readonly guard: SenderGuard;
  heardAt: number;
  refusedAt: number;
  /** When the peer's process was seen to die; -Infinity: not since it last proved alive. */
  deadAt: number;
}

/** A key nobody has held or claimed yet. */
export function newKeyState(key: string): KeyState {
  return {
    key, holder: null, holderBoot: -1, epoch: 0, priority: 0, expiresAt: 0, serving: false, offeredTo: null, offerUntil: 0,
    maxEpoch: 0, claimPriority: 0, claimAt: -Infinity, releasing: false, candidates: new Map(), lastConflict: '',
    takeSentAt: -Infinity, expiryTimer: null, listeners: new Set(), lastSignature: '', onChange: null, offering: false,
  };
}

/** The lease as a view at local time t. */
export function viewOf(ks: KeyState, t: number): Lease {
  if (ks.holder === null) return freeLease(ks.key, ks.epoch);
  return {
    key: ks.key,
    holder: ks.holder,
    epoch: ks.epoch,
    priority: ks.priority,
    remaining: Math.max(0, Math.round(ks.expiresAt - t)),
    serving: ks.serving,
    offeredTo: ks.offeredTo,
  };
}

/** Forgets the holder of a key (released, expired, died, or yielded). */
export function clearLease(ks: KeyState): void {
  ks.holder = null;
  ks.holderBoot = -1;
  ks.priority = 0;
  ks.serving = false;
  ks.offeredTo = null;
  ks.expiresAt = 0;
  if (ks.expiryTimer !== null) clearTimeout(ks.expiryTimer);
  ks.expiryTimer = null;
}

/**
 * Before the first lease duration has passed, a node may take a free key only once
 * it has heard from (or failed to reach) every peer: else a node that just started
 * would take a key that a peer holds but has not advertised to it yet.
 */
export function warm(ks: KeyState, peers: ReadonlyMap<string, PeerState>, t: number, startedAt: number, leaseDuration: number): boolean {
  if (t - startedAt >= leaseDuration) return true;
  for (const [id, peer] of peers) {
    const heard = ks.candidates.get(id);
    if (heard !== undefined && t - heard.at < leaseDuration) continue;
    if (t - peer.refusedAt < leaseDuration || peer.deadAt > -Infinity) continue;
    return false;
  }
  return true;
}

/** The peers heard competing for the key within a lease, whose process is not known to be dead. */
export function* liveCandidates(ks: KeyState, peers: ReadonlyMap<string, PeerState>, t: number, leaseDuration: number): Generator<Candidate> {
  for (const [node, c] of ks.candidates) {
    if (t - c.at >= leaseDuration) continue;
    const peer = peers.get(node);
    if (peer === undefined || peer.deadAt > -Infinity) continue;
    // A peer asks for a held key with a `take` advert, not through its candidacy.
    yield { node, priority: c.priority, preempt: false };
  }
}
