// The `memory` lease store: one node's view of a MemoryMedium that the nodes of one
// process share. What it asks of the medium is what etcd offers (create-if-absent with a
// TTL, keep-alive, rewrite-if-unchanged, delete, watch); who takes a key and when is the
// shared policy of src/ha/candidates.ts and src/ha/handover.ts. Time is the medium's
// clock, so a test can move it by hand and run an elector without sleeps.
//
//   vip/<key>              a Holding, alive for its TTL: handoverTimeout until the holder
//                          confirms (first renew), then a lease per renew
//   cand/<key>/<node>      a Candidate, alive for a lease after each acquire
//   epochs of a key        a counter of the medium that never goes back

import { TandemError, errors } from '../../../errors.ts';
import type { Logger } from '../../../log.ts';
import { preempter, type Candidate } from '../../candidates.ts';
import { handoverSettled, heirOf, mayOffer, nextMove, offerAfter, offerLapsed, settle, type ChangeSlot } from '../../handover.ts';
import { freeLease, publishView, subscribe, type Claim, type Lease, type LeaseStore } from '../../lease-store.ts';
import type { MemoryMedium, MemoryRecord } from './medium.ts';

export { MemoryMedium } from './medium.ts';

export interface MemoryStoreOptions {
  readonly node: string;
  readonly medium: MemoryMedium;
  readonly leaseDuration: number;
  readonly renewEvery: number;
  /** How long a holder waits, in a planned handover, for the new holder to serve. */
  readonly handoverTimeout: number;
  /** Awaited before the holder offers a key to a preempting candidate (see PeerStoreOptions). */
  readonly beforeOffer?: (key: string) => Promise<void>;
  readonly log?: Logger;
}

/** The value of a VIP record. */
interface Holding {
  readonly holder: string;
  readonly epoch: number;
  readonly priority: number;
  readonly serving: boolean;
  readonly offeredTo: string | null;
}

/** What this node keeps of one key besides the medium. */
interface KeyState extends ChangeSlot {
  readonly key: string;
  readonly listeners: Set<(lease: Lease) => void>;
  lastSignature: string;
  /** Last epoch seen, so a free view keeps it. */
  epoch: number;
  /** When this node's candidacy began (-Infinity: not competing). */
  claimSince: number;
  releasing: boolean;
  offering: boolean;
  offerUntil: number;
}

/** The `memory` lease store of one node. */
export class MemoryStore implements LeaseStore {
  private readonly opts: MemoryStoreOptions;
  private readonly medium: MemoryMedium;
  private readonly keys: Map<string, KeyState>;
  private readonly unwatch: () => void;
  private closed: boolean;
  /** Cut off from the medium (a partition): every call fails, nothing is heard. */
  private cutOff: boolean;

  constructor(opts: MemoryStoreOptions) {
    this.opts = opts;
    this.medium = opts.medium;
    this.keys = new Map();
    this.closed = false;
    this.cutOff = false;
    this.unwatch = this.medium.watch('', (path) => this.onChange(path));
  }

  async acquire(key: string, claim: Claim): Promise<Lease> {
    this.assertSelf(claim.node);
    const ks = this.state(key);
    const t = this.medium.clock.now();
    const rec = this.holding(key);
    if (rec?.value.holder !== claim.node) {
      if (ks.claimSince === -Infinity || this.medium.get(this.candPath(key)) === null) ks.claimSince = t;
      const me: Candidate = { node: claim.node, priority: claim.priority, preempt: claim.preempt };
      this.medium.put(this.candPath(key), me, this.opts.leaseDuration);
    }
    const h = rec?.value ?? null;
    const facts = { holder: h?.holder ?? null, priority: h?.priority ?? 0, serving: h?.serving ?? false, offeredTo: h?.offeredTo ?? null, overdue: false, warm: t - ks.claimSince >= this.opts.renewEvery };
    switch (nextMove(facts, claim, this.candidates(key))) {
      case 'take':
        if (this.medium.create(this.vipPath(key), this.newHolding(key, claim), this.opts.handoverTimeout) > 0) this.took(ks);
        break;
      case 'take-offer':
        if (this.medium.replace(this.vipPath(key), rec!.rev, this.newHolding(key, claim), this.opts.handoverTimeout) > 0) this.took(ks);
        break;
      default:
        // `ask`: a preempting claim asks through its candidacy record, which the holder reads on renew.
        break;
    }
    return this.view(ks);
  }

  async renew(key: string, node: string): Promise<Lease> {
    this.assertSelf(node);
    const ks = this.state(key);
    const rec = this.holding(key);
    if (rec === null || rec.value.holder !== node || ks.releasing) return this.view(ks);
    const t = this.medium.clock.now();
    let h = rec.value;
    if (offerLapsed(h.offeredTo, false, ks.offerUntil, t)) h = { ...h, offeredTo: null };
    if (h.serving && h === rec.value) this.medium.keepAlive(this.vipPath(key), rec.rev, this.opts.leaseDuration);
    else this.medium.replace(this.vipPath(key), rec.rev, { ...h, serving: true }, this.opts.leaseDuration);
    if (h.serving) void this.offerToPreempter(ks).catch(() => {});
    this.changed(ks);
    return this.view(ks);
  }

  async release(key: string, node: string): Promise<void> {
    this.assertSelf(node);
    const ks = this.state(key);
    ks.claimSince = -Infinity;
    this.medium.delete(this.candPath(key));
    const rec = this.holding(key);
    if (rec === null || rec.value.holder !== node) return;
    const heir = heirOf(rec.value.serving, this.candidates(key), node);
    if (heir !== null) {
      ks.releasing = true;
      const offered = this.medium.replace(this.vipPath(key), rec.rev, { ...rec.value, offeredTo: heir }, this.opts.handoverTimeout);
      if (offered > 0) {
        const present = () => this.medium.get(this.candPath(key, heir)) !== null;
        await settle(ks, () => handoverSettled(this.facts(key), node, heir, present()), this.opts.handoverTimeout, this.medium.clock);
      }
      ks.releasing = false;
    }
    const now = this.holding(key);
    if (now !== null && now.value.holder === node) this.medium.delete(this.vipPath(key), now.rev);
    this.changed(ks);
  }

  watch(key: string, listener: (lease: Lease) => void): () => void {
    const ks = this.state(key);
    return subscribe(ks.listeners, listener, () => this.view(ks));
  }

  /** Cuts this node off from the medium, as a partition would, or (false) reconnects it. */
  cut(off: boolean): void {
    this.cutOff = off;
    if (!off) for (const ks of this.keys.values()) this.changed(ks);
  }

  /** Withdraws this node's candidacies and stops; release held keys first. */
  close(): void {
    for (const key of this.keys.keys()) this.medium.delete(this.candPath(key));
    this.abandon();
  }

  /** Stops at once without touching the medium, as a crash would: its records run out on their TTLs. */
  abandon(): void {
    this.closed = true;
    this.unwatch();
    for (const ks of this.keys.values()) ks.listeners.clear();
  }

  // ---- internals ----

  private newHolding(key: string, claim: Claim): Holding {
    return { holder: claim.node, epoch: this.medium.next(`epoch/${key}`), priority: claim.priority, serving: false, offeredTo: null };
  }

  /** A holder is not a candidate: its candidacy would make the others wait for it after it died. */
  private took(ks: KeyState): void {
    ks.claimSince = -Infinity;
    this.medium.delete(this.candPath(ks.key));
    this.changed(ks);
  }

  /** A live candidate of higher priority asks for the key (preempt): offer it, once the connections wound down. */
  private async offerToPreempter(ks: KeyState): Promise<void> {
    const rec = this.holding(ks.key);
    if (rec === null || rec.value.holder !== this.opts.node) return;
    if (!mayOffer({ serving: rec.value.serving, releasing: ks.releasing, offering: ks.offering, offeredTo: rec.value.offeredTo })) return;
    const best = preempter(this.candidates(ks.key), this.opts.node, rec.value.priority);
    if (best === null) return;
    const stillMay = () => {
      const now = this.holding(ks.key)?.value;
      return now?.holder === this.opts.node && !ks.releasing && now.offeredTo === null;
    };
    await offerAfter(ks, () => this.opts.beforeOffer?.(ks.key), stillMay, () => {
      const now = this.holding(ks.key)!;
      ks.offerUntil = this.medium.clock.now() + this.opts.handoverTimeout;
      this.medium.replace(this.vipPath(ks.key), now.rev, { ...now.value, offeredTo: best }, null);
      this.opts.log?.info({ vip: ks.key, to: best }, `ha: ${ks.key}: offering it to ${best}, which preempts`);
    });
  }

  private holding(key: string): MemoryRecord<Holding> | null {
    return this.medium.get<Holding>(this.vipPath(key));
  }

  private facts(key: string): { holder: string | null; serving: boolean; offeredTo: string | null } {
    const h = this.holding(key)?.value ?? null;
    return { holder: h?.holder ?? null, serving: h?.serving ?? false, offeredTo: h?.offeredTo ?? null };
  }

  private candidates(key: string): Iterable<Candidate> {
    return [...this.medium.list<Candidate>(`cand/${key}/`).values()].map((r) => r.value);
  }

  private view(ks: KeyState): Lease {
    const rec = this.holding(ks.key);
    if (rec === null) return freeLease(ks.key, ks.epoch);
    const h = rec.value;
    ks.epoch = Math.max(ks.epoch, h.epoch);
    const remaining = Math.max(0, Math.round(rec.expiresAt - this.medium.clock.now()));
    return { key: ks.key, holder: h.holder, epoch: h.epoch, priority: h.priority, remaining, serving: h.serving, offeredTo: h.offeredTo };
  }

  private onChange(path: string): void {
    if (this.closed || this.cutOff) return;
    const key = path.startsWith('vip/') ? path.slice(4) : path.startsWith('cand/') ? path.slice(5, path.lastIndexOf('/')) : null;
    const ks = key === null ? undefined : this.keys.get(key);
    if (ks !== undefined) this.changed(ks);
  }

  private changed(ks: KeyState): void {
    ks.onChange?.();
    publishView(ks, this.view(ks));
  }

  private state(key: string): KeyState {
    let ks = this.keys.get(key);
    if (ks === undefined) {
      ks = { key, listeners: new Set(), lastSignature: '', epoch: 0, claimSince: -Infinity, releasing: false, offering: false, offerUntil: 0, onChange: null };
      this.keys.set(key, ks);
    }
    return ks;
  }

  private vipPath(key: string): string {
    return `vip/${key}`;
  }

  private candPath(key: string, node = this.opts.node): string {
    return `cand/${key}/${node}`;
  }

  private assertSelf(node: string): void {
    if (node !== this.opts.node) throw new TandemError(errors.LEASE_STORE, `this memory store speaks for ${this.opts.node}, not ${node}`);
    if (this.closed) throw new TandemError(errors.LEASE_STORE, 'the memory store is closed');
    if (this.cutOff) throw new TandemError(errors.LEASE_STORE, `${node} is cut off from the memory medium`);
  }
}
