// The `etcd` lease store: the LeaseStore calls on etcd's own primitives (client.ts,
// watch.ts). Partition-safe: a VIP has at most one holder, the one whose write etcd's
// quorum accepted.
//
// Keys and values: keys.ts.
//
// * acquire creates the VIP key in a transaction only if it is absent (create_revision
//   == 0), or only if it still is the offer made to this node (mod_revision unchanged).
//   The revision of that write is the epoch: the key's create revision, or the
//   handover's revision. Writes by the same holder carry their epoch in `e`.
// * renew is one lease keep-alive and one write of the key (a "beat"; the first one
//   also writes `serving`). The holder counts its lease on its own monotonic clock from
//   when the last successful keep-alive was sent, and a lease duration from its last
//   successful write; once either has run out it treats the lease as lost, whatever
//   etcd answers later.
// * a standby that has seen no write of a held key for a lease duration takes it over
//   in a transaction on the revision it last saw (key-state.ts says why that is safe),
//   without waiting for etcd's own lease expiry.
// * release offers the key to the best ready candidate (make-before-break) and then
//   revokes the lease, or revokes at once: the key is gone in one round trip.
// * every node watches the whole prefix, so a deleted or expired key is seen at once
//   and the best present candidate takes it; a fresh candidate waits one renew interval
//   so that candidates starting together see each other first.

import { TandemError, errors } from '../../../errors.ts';
import { preempter } from '../../candidates.ts';
import { handoverSettled, heirOf, mayOffer, nextMove, offerAfter, offerLapsed, settle } from '../../handover.ts';
import { freeLease, publishView, subscribe, type Claim, type Lease, type LeaseStore } from '../../lease-store.ts';
import type { EtcdClient, KeyValue } from './client.ts';
import { KeyLayout, holdingFacts, parseCandidacy, parseHolding, type Holding } from './keys.ts';
import { forgetBeat, newKeyState, overdue, sawBeat, type KeyState } from './key-state.ts';
import { OwnLease } from './own-lease.ts';
import { Presence } from './presence.ts';
import { PrefixWatch, type WatchEvent } from './watch.ts';
import type { Logger } from '../../../log.ts';

export interface EtcdStoreOptions {
  readonly node: string;
  readonly client: EtcdClient;
  readonly prefix: string;
  readonly leaseDuration: number;
  readonly renewEvery: number;
  /** How long a holder waits, in a planned handover, for the new holder to serve. */
  readonly handoverTimeout: number;
  /** Awaited before the holder offers a key to a preempting candidate (see PeerStoreOptions). */
  readonly beforeOffer?: (key: string) => Promise<void>;
  readonly log?: Logger;
}

const now = (): number => performance.now();


/** The `etcd` lease store. */
export class EtcdStore implements LeaseStore {
  private readonly opts: EtcdStoreOptions;
  private readonly client: EtcdClient;
  private readonly keyLayout: KeyLayout;
  private readonly ttlSeconds: number;
  private readonly keys: Map<string, KeyState>;
  private watcher: PrefixWatch | null;
  private readonly presence: Presence;
  private ticker: NodeJS.Timeout | null;
  private closed: boolean;

  constructor(opts: EtcdStoreOptions) {
    this.opts = opts;
    this.client = opts.client;
    this.keyLayout = new KeyLayout(opts.prefix);
    // etcd leases are whole seconds.
    this.ttlSeconds = Math.max(1, Math.ceil(opts.leaseDuration / 1000));
    this.keys = new Map();
    this.watcher = null;
    this.presence = new Presence(opts.client, this.ttlSeconds, opts.renewEvery, opts.log);
    this.presence.onRenewed = () => {
      for (const ks of this.keys.values()) if (ks.claim !== null) ks.claim.written = null;
    };
    this.ticker = null;
    this.closed = false;
  }

  get stats(): Readonly<Record<string, number>> {
    return { ...this.client.stats };
  }

  /** Reaches etcd, reads the prefix, takes a presence lease and starts watching. */
  async start(): Promise<void> {
    await this.client.connect();
    const revision = await this.readAll();
    const granted = await this.presence.start();
    if (granted > this.ttlSeconds) {
      this.opts.log?.warn({ granted, asked: this.ttlSeconds }, `ha etcd store: etcd grants leases of at least ${granted} s (asked ${this.ttlSeconds} s): lower its --election-timeout for shorter leases`);
    }
    this.watcher = new PrefixWatch({
      client: this.client,
      prefix: this.keyLayout.root,
      after: revision,
      onEvents: (events) => this.onEvents(events),
      onReset: () => this.readAll(),
      log: this.opts.log,
    });
    await this.watcher.start();
    this.ticker = setInterval(() => this.tick(), this.opts.renewEvery);
  }

  /** Withdraws every candidacy (revokes the presence lease) and stops; release held keys first. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.ticker !== null) clearInterval(this.ticker);
    await this.presence.close(this.opts.renewEvery);
    await this.abandon();
  }

  /** Stops at once without telling etcd anything, as a crash would: held leases run out on the server. */
  async abandon(): Promise<void> {
    for (const ks of this.keys.values()) forgetBeat(ks);
    this.closed = true;
    if (this.ticker !== null) clearInterval(this.ticker);
    this.presence.abandon();
    for (const ks of this.keys.values()) {
      ks.own?.stop();
      ks.listeners.clear();
    }
    await this.watcher?.close();
    await this.client.close();
  }

  async acquire(key: string, claim: Claim): Promise<Lease> {
    this.assertSelf(claim.node);
    const ks = this.state(key);
    const t = now();
    ks.claim = { priority: claim.priority, preempt: claim.preempt, at: t, since: ks.claim?.since ?? t, written: ks.claim?.written ?? null };
    const h = ks.holding;
    if (h !== null && h.n === this.opts.node) {
      if (this.ownValid(ks, t)) return this.view(ks, t);
      // Ours from an earlier life (a restart, or a lease we stepped down from): void it.
      await this.client.revoke(ks.kv!.lease);
      return this.view(ks, now());
    }
    await this.writeClaim(ks);
    const t1 = now();
    // A fresh candidate waits half a lease, so that candidates starting together see each
    // other first: the time a holder allows a renewal before it is in doubt, so a node that
    // cannot make its candidacy known within it could not hold the key either.
    const facts = { ...holdingFacts(h), overdue: overdue(ks, this.opts.node, this.opts.leaseDuration, t1), warm: t - ks.claim.since >= Math.max(this.opts.renewEvery, this.opts.leaseDuration / 2) };
    switch (nextMove(facts, claim, ks.candidates.values())) {
      case 'take':
        return this.take(ks, claim.priority, 0);
      case 'take-over':
        this.opts.log?.info({ vip: key, holder: h!.n, silentMs: Math.round(t1 - ks.seenAt) }, `ha: ${key}: ${h!.n} wrote nothing for ${Math.round(t1 - ks.seenAt)} ms: taking the key over`);
        return this.take(ks, claim.priority, ks.kv!.modRevision);
      case 'take-offer':
        return this.take(ks, claim.priority, ks.kv!.modRevision);
      default:
        // A preempting claim asks through its candidacy key (`x`), which the holder watches.
        return this.view(ks, now());
    }
  }

  async renew(key: string, node: string): Promise<Lease> {
    this.assertSelf(node);
    const ks = this.state(key);
    const own = ks.own;
    if (own === null || own.releasing || !this.ownValid(ks, now())) return this.view(ks, now());
    const t0 = now();
    // The keep-alive and the beat go out together: the lease counts from the later send.
    const [ttl] = await Promise.all([
      this.client.keepAlive(own.id, Math.max(1, Math.floor(own.ttl / 3))),
      own.serving ? this.rewrite(ks, {}) : undefined,
    ]);
    if (ttl === 0) {
      this.lose(ks, 'etcd no longer knows its lease');
      return this.view(ks, now());
    }
    own.confirm(t0, ttl);
    if (!own.serving) {
      await this.rewrite(ks, { s: true });
      if (ks.own === own) own.serving = ks.holding?.s === true;
    } else {
      await this.offerToPreempter(ks);
    }
    this.changed(ks);
    return this.view(ks, now());
  }

  async release(key: string, node: string): Promise<void> {
    this.assertSelf(node);
    const ks = this.state(key);
    const written = ks.claim?.written ?? null;
    ks.claim = null;
    if (written !== null) await this.client.delete(this.candKey(ks.key)).catch(() => {});
    const own = ks.own;
    const h = ks.holding;
    if (own === null) {
      if (h !== null && h.n === this.opts.node) await this.client.revoke(ks.kv!.lease);
      return;
    }
    const heir = heirOf(own.serving && this.ownValid(ks, now()), ks.candidates.values(), this.opts.node);
    if (heir !== null) {
      own.releasing = true;
      await this.rewrite(ks, { o: heir }).catch((err: Error) => this.opts.log?.warn({ vip: key, heir, err: err.message }, `ha: ${key}: offering to ${heir} failed: ${err.message}`));
      const settled = () => handoverSettled(holdingFacts(ks.holding), this.opts.node, heir, ks.candidates.has(heir));
      if (ks.holding?.o === heir) await settle(ks, settled, this.opts.handoverTimeout);
    }
    if (ks.own === own) ks.own = null;
    own.stop();
    await this.client.revoke(own.id);
    if (ks.kv !== null && ks.kv.lease === own.id) this.apply(ks, null, ks.rev + 1);
    this.changed(ks);
  }

  watch(key: string, listener: (lease: Lease) => void): () => void {
    const ks = this.state(key);
    return subscribe(ks.listeners, listener, () => this.view(ks, now()));
  }

  // ---- holding ----

  private async take(ks: KeyState, priority: number, modRevision: number): Promise<Lease> {
    const t0 = now();
    const granted = await this.client.grant(this.ttlSeconds);
    const holding: Holding = { n: this.opts.node, p: priority, s: false, o: null, t: granted.ttl * 1000 };
    const key = this.vipKey(ks.key);
    const res = await this.client.putIf(key, JSON.stringify(holding), granted.id, modRevision).catch((err: Error) => {
      void this.client.revoke(granted.id).catch(() => {});
      throw err;
    });
    if (!res.written && res.current?.lease !== granted.id) {
      void this.client.revoke(granted.id).catch(() => {});
      if (res.current === null) this.apply(ks, null, res.revision);
      else this.apply(ks, res.current, res.current.modRevision);
      return this.view(ks, now());
    }
    const revision = res.written ? res.revision : res.current!.modRevision;
    const own = new OwnLease(granted.id, granted.ttl, t0, this.opts.leaseDuration, () => {
      if (ks.own === own) this.lose(ks, "not renewed within its TTL on this node's clock");
    });
    ks.own = own;
    const createRevision = modRevision === 0 ? revision : ks.kv?.createRevision ?? revision;
    this.apply(ks, { key, value: JSON.stringify(holding), createRevision, modRevision: revision, lease: granted.id }, revision);
    // The watch may have delivered our write before its answer came, while the lease was
    // not ours yet: the view changed now even when the write was already applied.
    this.changed(ks);
    // A holder is not a candidate: its presence would make the others wait for it after it died.
    const written = ks.claim?.written ?? null;
    ks.claim = null;
    if (written !== null) void this.client.delete(this.candKey(ks.key)).catch(() => {});
    return this.view(ks, now());
  }

  /**
   * Rewrites our holding with `change`, under our lease, only if the key is as we last
   * saw it. One write at a time, or they would void each other's revision; a beat (no
   * change) asked while a write is queued is that write.
   */
  private rewrite(ks: KeyState, change: Partial<Holding>): Promise<void> {
    if (ks.queued > 0 && Object.keys(change).length === 0) return ks.writes;
    ks.queued++;
    const write = ks.writes.then(() => this.writeHolding(ks, change)).finally(() => ks.queued--);
    ks.writes = write.catch(() => {});
    return write;
  }

  private async writeHolding(ks: KeyState, change: Partial<Holding>): Promise<void> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const own = ks.own;
      const kv = ks.kv;
      const h = ks.holding;
      if (own === null || kv === null || h === null || kv.lease !== own.id) return;
      const next: Holding = { ...h, ...change, e: ks.epoch, t: own.ttl };
      const value = JSON.stringify(next);
      const sent = now();
      const res = await this.client.putIf(kv.key, value, own.id, kv.modRevision);
      if (res.written) {
        own.beat(sent);
        this.apply(ks, { ...kv, value, modRevision: res.revision }, res.revision);
        return;
      }
      if (res.current === null) this.apply(ks, null, res.revision);
      else this.apply(ks, res.current, res.current.modRevision);
    }
  }

  /** A live candidate of higher priority asks for the key (preempt): offer it. */
  private async offerToPreempter(ks: KeyState): Promise<void> {
    const h = ks.holding;
    const own = ks.own;
    if (h === null || own === null || !mayOffer({ serving: own.serving, releasing: own.releasing, offering: own.offering, offeredTo: h.o })) return;
    const best = preempter(ks.candidates.values(), this.opts.node, h.p);
    if (best === null) return;
    const stillMay = () => ks.own === own && !own.releasing && ks.holding !== null && ks.holding.o === null;
    await offerAfter(own, () => this.opts.beforeOffer?.(ks.key), stillMay, () => {
      own.offerUntil = now() + this.opts.handoverTimeout;
      return this.rewrite(ks, { o: best });
    });
  }

  private lose(ks: KeyState, why: string): void {
    const own = ks.own;
    if (own === null) return;
    own.stop();
    ks.own = null;
    this.opts.log?.warn({ vip: ks.key, reason: why }, `ha: ${ks.key}: lease lost: ${why}`);
    this.changed(ks);
  }

  private ownValid(ks: KeyState, t: number): boolean {
    const own = ks.own;
    return own !== null && ks.kv !== null && ks.kv.lease === own.id && own.remaining(t) > 0;
  }

  // ---- candidacy ----

  private async writeClaim(ks: KeyState): Promise<void> {
    const claim = ks.claim!;
    const value = JSON.stringify({ p: claim.priority, x: claim.preempt });
    if (claim.written === value) return;
    await this.presence.put(this.candKey(ks.key), value);
    claim.written = value;
  }

  // ---- the view of etcd ----

  private onEvents(events: WatchEvent[]): void {
    for (const e of events) {
      const ref = this.keyLayout.parse(e.kv.key);
      if (ref?.kind === 'vip') {
        this.apply(this.state(ref.vip), e.type === 'put' ? e.kv : null, e.kv.modRevision);
      } else if (ref?.kind === 'candidate') {
        const ks = this.state(ref.vip);
        if (e.type === 'delete') ks.candidates.delete(ref.node);
        else ks.candidates.set(ref.node, parseCandidacy(ref.node, e.kv.value));
        ks.onChange?.();
        if (ks.own?.serving === true) void this.offerToPreempter(ks).catch(() => {});
      }
    }
  }

  /** Applies the VIP key as of `rev` (null: deleted), unless something newer was applied. */
  private apply(ks: KeyState, kv: KeyValue | null, rev: number): void {
    if (rev <= ks.rev) return;
    ks.rev = rev;
    ks.kv = kv;
    ks.holding = kv === null ? null : parseHolding(kv.value);
    if (ks.holding !== null && ks.holding.n !== this.opts.node) sawBeat(ks, this.opts.leaseDuration, () => this.changed(ks));
    else forgetBeat(ks);
    if (kv !== null && ks.holding !== null) ks.epoch = Math.max(ks.epoch, ks.holding.e ?? kv.modRevision);
    const own = ks.own;
    if (own !== null && (kv === null || kv.lease !== own.id) && !own.releasing) {
      // Taken over by a handover, or deleted: the lease holds nothing of ours any more.
      own.stop();
      ks.own = null;
      void this.client.revoke(own.id).catch(() => {});
    }
    this.changed(ks);
  }

  /** Reads every key under the prefix; returns the revision of the read. */
  private async readAll(): Promise<number> {
    const { kvs, revision } = await this.client.range(this.keyLayout.root, { prefix: true });
    for (const ks of this.keys.values()) ks.candidates.clear();
    const seen = new Set<string>();
    for (const kv of kvs) {
      const ref = this.keyLayout.parse(kv.key);
      if (ref?.kind === 'vip') {
        const ks = this.state(ref.vip);
        seen.add(ks.key);
        ks.rev = 0;
        this.apply(ks, kv, Math.max(1, kv.modRevision));
      } else if (ref?.kind === 'candidate') {
        this.state(ref.vip).candidates.set(ref.node, parseCandidacy(ref.node, kv.value));
      }
    }
    for (const ks of this.keys.values()) {
      if (!seen.has(ks.key) && ks.kv !== null) this.apply(ks, null, revision);
      ks.rev = Math.max(ks.rev, revision);
    }
    return revision;
  }

  private tick(): void {
    if (this.closed) return;
    const t = now();
    this.presence.keepAlive();
    for (const ks of this.keys.values()) {
      const own = ks.own;
      // A lease not yet confirmed by the elector (its MASTER hook runs), or being handed
      // over, is kept alive here; a serving lease only by renew().
      if (own !== null && ((!own.serving && t - own.takenAt < this.opts.handoverTimeout) || own.releasing)) {
        void this.client.keepAlive(own.id, Math.max(1, Math.floor(own.ttl / 3))).then((ttl) => {
          if (ttl > 0 && ks.own === own) own.confirm(t, ttl);
        }, () => {});
        void this.rewrite(ks, {}).catch(() => {});
      }
      if (own !== null && own.serving && offerLapsed(ks.holding?.o ?? null, own.releasing, own.offerUntil, t)) {
        void this.rewrite(ks, { o: null }).catch(() => {});
      }
      const claim = ks.claim;
      if (claim !== null && t - claim.at >= this.opts.leaseDuration) {
        ks.claim = null;
        if (claim.written !== null) void this.client.delete(this.candKey(ks.key)).catch(() => {});
      }
    }
  }

  private view(ks: KeyState, t: number): Lease {
    const h = ks.holding;
    // A holder whose write is overdue is gone to us: the elector competes, acquire takes over.
    if (h === null || overdue(ks, this.opts.node, this.opts.leaseDuration, t)) return freeLease(ks.key, ks.epoch);
    let remaining = h.t;
    if (h.n === this.opts.node) {
      // Ours only while our own clock says the lease lives; otherwise it is void to us.
      if (!this.ownValid(ks, t)) return freeLease(ks.key, ks.epoch);
      remaining = Math.round(ks.own!.remaining(t));
    }
    return { key: ks.key, holder: h.n, epoch: ks.epoch, priority: h.p, remaining, serving: h.s, offeredTo: h.o };
  }

  private changed(ks: KeyState): void {
    ks.onChange?.();
    publishView(ks, this.view(ks, now()));
  }

  private state(key: string): KeyState {
    let ks = this.keys.get(key);
    if (ks === undefined) {
      ks = newKeyState(key);
      this.keys.set(key, ks);
    }
    return ks;
  }

  private vipKey(key: string): string {
    return this.keyLayout.vip(key);
  }

  private candKey(key: string): string {
    return this.keyLayout.candidate(key, this.opts.node);
  }

  private assertSelf(node: string): void {
    if (node !== this.opts.node) throw new TandemError(errors.LEASE_STORE, `this etcd store speaks for ${this.opts.node}, not ${node}`);
    if (this.closed) throw new TandemError(errors.LEASE_STORE, 'the etcd store is closed');
  }
}
