// The peer store's datagrams: a 32-byte HMAC-SHA256 over the body, then the body as
// JSON. JSON keeps the format readable in a packet capture; adverts are a few per
// renew interval, so its cost does not matter.
//
// Every datagram carries the sender's node id, its boot id (the wall-clock millisecond
// the process started: a restarted sender has a larger one and is accepted again) and a
// sequence number that grows by one per datagram of that boot. A receiver accepts only
// a newer (boot, seq) than it has seen from that sender, so a captured advert replayed
// later is dropped.

import { createHmac, timingSafeEqual } from 'node:crypto';

const MAC_BYTES = 32;
/** Larger datagrams are not ours; nothing we send comes close. */
export const MAX_DATAGRAM = 1024;

/** The holder's advert, sent on every renew (and while pending or handing over). */
export interface HoldAdvert {
  readonly t: 'hold';
  readonly k: string;
  readonly e: number;
  readonly p: number;
  /** Milliseconds of lease left, to be counted by the receiver from reception. */
  readonly r: number;
  readonly sv: boolean;
  /** Offered to this node in a handover; null: no offer. */
  readonly o: string | null;
}

/** A non-holder's candidacy: its priority (0: not competing) and the newest epoch it saw. */
export interface CandidateAdvert {
  readonly t: 'cand';
  readonly k: string;
  readonly p: number;
  readonly e: number;
}

/** The holder gives the lease of epoch e up; the others may take it at once. */
export interface ReleaseAdvert {
  readonly t: 'rel';
  readonly k: string;
  readonly e: number;
}

/** A higher-priority node asks the holder of epoch e to hand the lease over (preemption). */
export interface TakeoverRequest {
  readonly t: 'take';
  readonly k: string;
  readonly p: number;
  readonly e: number;
}

export type Advert = HoldAdvert | CandidateAdvert | ReleaseAdvert | TakeoverRequest;

/** An advert with its sender. */
export interface Envelope {
  readonly n: string;
  readonly b: number;
  readonly s: number;
  readonly a: Advert;
}

/** Serialises and signs one advert. */
export function seal(key: Buffer, envelope: Envelope): Buffer {
  const body = Buffer.from(JSON.stringify(envelope));
  const mac = createHmac('sha256', key).update(body).digest();
  return Buffer.concat([mac, body]);
}

export type OpenResult =
  | { readonly ok: true; readonly envelope: Envelope }
  | { readonly ok: false; readonly reason: 'badMac' | 'malformed' };

/** Checks the MAC in constant time, then parses and shape-checks the body. */
export function open(key: Buffer, datagram: Buffer): OpenResult {
  if (datagram.length <= MAC_BYTES || datagram.length > MAX_DATAGRAM) return { ok: false, reason: 'malformed' };
  const mac = datagram.subarray(0, MAC_BYTES);
  const body = datagram.subarray(MAC_BYTES);
  const expected = createHmac('sha256', key).update(body).digest();
  if (!timingSafeEqual(mac, expected)) return { ok: false, reason: 'badMac' };
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed' };
  }
  return isEnvelope(value) ? { ok: true, envelope: value } : { ok: false, reason: 'malformed' };
}

/** HMAC of a heartbeat challenge: proves the sender knows the secret, bound to this nonce. */
export function proof(key: Buffer, nonce: string, node: string, boot: number): Buffer {
  return createHmac('sha256', key).update(`tandem-heartbeat|${nonce}|${node}|${boot}`).digest();
}

/** Constant-time comparison of a received proof (hex) with the expected one. */
export function proofMatches(expected: Buffer, receivedHex: unknown): boolean {
  if (typeof receivedHex !== 'string' || receivedHex.length !== expected.length * 2) return false;
  const received = Buffer.from(receivedHex, 'hex');
  return received.length === expected.length && timingSafeEqual(received, expected);
}

function isEnvelope(v: unknown): v is Envelope {
  if (typeof v !== 'object' || v === null) return false;
  const e = v as Record<string, unknown>;
  if (typeof e.n !== 'string' || !isCount(e.b) || !isCount(e.s)) return false;
  const a = e.a as Record<string, unknown> | null;
  if (typeof a !== 'object' || a === null || typeof a.k !== 'string' || !isCount(a.e)) return false;
  switch (a.t) {
    case 'hold':
      return isCount(a.p) && isCount(a.r) && typeof a.sv === 'boolean' && (a.o === null || typeof a.o === 'string');
    case 'cand':
    case 'take':
      return isCount(a.p);
    case 'rel':
      return true;
    default:
      return false;
  }
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Per-sender replay guard. A sender's (boot, seq) must grow. A new boot is accepted when
 * it is larger than the last one, or when the heartbeat connection has just proven that
 * boot live with a fresh challenge (covers a restarted host whose clock went back).
 * A boot whose heartbeat connection closed (its process died) is refused until proven
 * live again, so an advert still in flight from a dead holder cannot revive its lease.
 */
export class SenderGuard {
  boot: number;
  seq: number;
  /** Boot proven live by the heartbeat challenge; -1: none. */
  provenBoot: number;
  /** Boot whose process is known dead; -1: none. */
  deadBoot: number;

  constructor() {
    this.boot = -1;
    this.seq = -1;
    this.provenBoot = -1;
    this.deadBoot = -1;
  }

  /**
   * 'ok' (and remembers it), 'duplicate' (the last datagram again: its other copy, unicast
   * or multicast, came first), 'replay' (older) or 'dead'.
   */
  admit(boot: number, seq: number): 'ok' | 'duplicate' | 'replay' | 'dead' {
    if (boot === this.deadBoot) return 'dead';
    if (boot === this.boot) {
      if (seq === this.seq) return 'duplicate';
      if (seq < this.seq) return 'replay';
    } else if (boot < this.boot && boot !== this.provenBoot) {
      return 'replay';
    }
    this.boot = boot;
    this.seq = seq;
    return 'ok';
  }
}
