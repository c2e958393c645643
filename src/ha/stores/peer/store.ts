// The embedded lease store: the nodes of `ha.nodes` talk directly, VRRP-like, over UDP.
//
// Every node sends, per watched key and renew interval, one advert to every other node:
// the holder a `hold` advert (epoch, priority, lease left) on each renew, the others a
// `cand` advert with their priority (0 when not competing). A receiver counts a holder's
// lease from the moment the advert arrived, on its own monotonic clock; hosts never
// compare clocks. When the lease runs out, or the holder releases it, or its process is
// seen to die (heartbeat.ts), the best ready candidate (highest priority, then smallest
// node id) takes it with epoch + 1.
//
// Split brain: nothing stops two partitioned nodes from both holding a key, as with VRRP.
// When a holder hears another holder, the lower priority yields at once (then the lower
// epoch, then the larger node id). The winner moves its epoch past both, which fences the
// loser's epoch and makes the winner's elector re-run its MASTER hook (gratuitous ARP
// again), so clients leave the loser's MAC without waiting. Partition safety needs a
// quorum store (etcd); see docs/ha.md.

import type { HaNodeConfig } from '../../../config/types.ts';
import { TandemError, errors } from '../../../errors.ts';
import { beats } from '../../candidates.ts';
import { handoverSettled, heirOf, mayOffer, nextMove, offerAfter, offerLapsed, settle } from '../../handover.ts';
import { publishView, subscribe, type Claim, type Lease, type LeaseStore } from '../../lease-store.ts';
import { clearLease, liveCandidates, newKeyState, viewOf, warm, type KeyState, type PeerState } from './key-state.ts';
import { Heartbeats } from './heartbeat.ts';
import { AdvertTransport } from './transport.ts';
import { admitDatagram, type PeerStoreStats } from './admission.ts';
import type { PeerStoreOptions } from './options.ts';
import { SenderGuard, seal, type Advert, type HoldAdvert } from './wire.ts';

export type { PeerStoreOptions } from './options.ts';
export type { PeerStoreStats } from './admission.ts';

const now = (): number => performance.now();

/** The `peer` lease store. */
export class PeerStore implements LeaseStore {
  private readonly opts: PeerStoreOptions;
  private readonly self: HaNodeConfig;
  private readonly key: Buffer;
  private readonly boot: number;
  private seq: number;
  private readonly peers: Map<string, PeerState>;
  private readonly keys: Map<string, KeyState>;
  private readonly transport: AdvertTransport;
  private readonly heartbeats: Heartbeats;
  private ticker: NodeJS.Timeout | null;
  private startedAt: number;
  private closed: boolean;
  readonly stats: PeerStoreStats;

  constructor(opts: PeerStoreOptions) {
    const self = opts.nodes.find((n) => n.id === opts.node);
    if (self === undefined) throw new TandemError(errors.LEASE_STORE, `node ${opts.node} is not in ha.nodes`);
    this.opts = opts;
    this.self = self;
    this.key = Buffer.from(opts.secret ?? '', 'utf8');
    // Larger on every restart of this node (see wire.ts); the clock is only compared with itself.
    this.boot = Date.now();
    this.seq = 0;
    this.peers = new Map();
    for (const n of opts.nodes) {
      if (n.id !== opts.node) this.peers.set(n.id, { config: n, guard: new SenderGuard(), heardAt: -Infinity, refusedAt: -Infinity, deadAt: -Infinity });
    }
    this.keys = new Map();
    this.transport = new AdvertTransport({
      self,
      peers: [...this.peers.values()].map((p) => p.config),
      group: opts.multicastGroup ?? null,
      onDatagram: (msg, size) => this.onDatagram(msg, size),
      log: opts.log,
    });
    this.heartbeats = new Heartbeats({
      self,
      peers: [...this.peers.values()].map((p) => p.config),
      key: this.key,
      boot: this.boot,
      retryEvery: Math.min(opts.renewEvery, 250),
    });
    this.ticker = null;
    this.startedAt = Infinity;
    this.closed = false;
    this.stats = { sent: 0, sendErrors: 0, multicastSent: 0, duplicates: 0, received: 0, accepted: 0, badMac: 0, unknownNode: 0, replayed: 0, malformed: 0, fromDead: 0 };
  }

  /** Binds this node's HA address (UDP and TCP) and starts advertising. */
  async start(): Promise<void> {
    await this.transport.start();
    this.heartbeats.on('alive', (node, boot) => this.onAlive(node, boot));
    this.heartbeats.on('dead', (node, boot) => this.onDead(node, boot));
    this.heartbeats.on('refused', (node) => {
      const peer = this.peers.get(node);
      if (peer !== undefined) peer.refusedAt = now();
    });
    try {
      await this.heartbeats.start();
    } catch (err) {
      await this.transport.close();
      throw err;
    }
    this.startedAt = now();
    this.ticker = setInterval(() => this.tick(), this.opts.renewEvery);
  }

  /** Stops advertising and closes the sockets; call release() for held keys first. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ticker !== null) clearInterval(this.ticker);
    for (const ks of this.keys.values()) {
      if (ks.expiryTimer !== null) clearTimeout(ks.expiryTimer);
      ks.listeners.clear();
    }
    await this.heartbeats.close();
    await this.transport.close();
  }

  async acquire(key: string, claim: Claim): Promise<Lease> {
    this.assertSelf(claim.node);
    const ks = this.state(key);
    const t = now();
    const fresh = ks.claimAt === -Infinity;
    ks.claimPriority = claim.priority;
    ks.claimAt = t;
    this.expireIfDue(ks, t);
    const warmedUp = warm(ks, this.peers, t, this.startedAt, this.opts.leaseDuration);
    const facts = { holder: ks.holder, priority: ks.priority, serving: ks.serving, offeredTo: ks.offeredTo, overdue: false, warm: warmedUp };
    switch (nextMove(facts, claim, liveCandidates(ks, this.peers, t, this.opts.leaseDuration))) {
      case 'keep':
        return viewOf(ks, t);
      case 'take':
      case 'take-offer':
        return this.take(ks, t, claim.priority);
      case 'ask':
        if (t - ks.takeSentAt < this.opts.renewEvery) break;
        ks.takeSentAt = t;
        await this.broadcast({ t: 'take', k: key, p: claim.priority, e: ks.epoch }).catch(() => {});
        break;
      default:
        break;
    }
    // A node that starts competing says so at once, so the others count it in.
    if (fresh) await this.broadcast({ t: 'cand', k: key, p: claim.priority, e: ks.maxEpoch }).catch(() => {});
    return viewOf(ks, t);
  }

  async renew(key: string, node: string): Promise<Lease> {
    this.assertSelf(node);
    const ks = this.state(key);
    const t = now();
    this.expireIfDue(ks, t);
    if (ks.holder !== this.self.id || ks.releasing) return viewOf(ks, t);
    ks.expiresAt = t + this.opts.leaseDuration;
    ks.serving = true;
    if (offerLapsed(ks.offeredTo, false, ks.offerUntil, t)) ks.offeredTo = null;
    this.armExpiry(ks, t);
    await this.broadcast(this.holdAdvert(ks));
    this.changed(ks);
    return viewOf(ks, now());
  }

  async release(key: string, node: string): Promise<void> {
    this.assertSelf(node);
    const ks = this.state(key);
    ks.claimAt = -Infinity;
    const t = now();
    this.expireIfDue(ks, t);
    if (ks.holder !== this.self.id) {
      await this.broadcast({ t: 'cand', k: key, p: 0, e: ks.maxEpoch }).catch(() => {});
      return;
    }
    const heir = heirOf(ks.serving, liveCandidates(ks, this.peers, t, this.opts.leaseDuration), this.self.id);
    if (heir !== null) {
      ks.releasing = true;
      ks.offeredTo = heir;
      ks.offerUntil = t + this.opts.handoverTimeout;
      ks.expiresAt = t + this.opts.leaseDuration;
      this.armExpiry(ks, t);
      this.changed(ks);
      await this.broadcast(this.holdAdvert(ks)).catch(() => {});
      await settle(ks, () => handoverSettled(ks, this.self.id, heir), this.opts.handoverTimeout);
      ks.releasing = false;
      if (ks.holder !== this.self.id) return;
    }
    // Stop advertising first: the holder state goes before the release is sent, so no
    // advert can follow the release and make the others wait a lease.
    const epoch = ks.epoch;
    clearLease(ks);
    this.changed(ks);
    const rel: Advert = { t: 'rel', k: key, e: epoch };
    // Two copies: a lost datagram here costs the others a whole lease.
    await this.broadcast(rel).catch(() => {});
    await this.broadcast(rel).catch(() => {});
  }

  watch(key: string, listener: (lease: Lease) => void): () => void {
    const ks = this.state(key);
    return subscribe(ks.listeners, listener, () => viewOf(ks, now()));
  }

  // ---- internals ----

  private assertSelf(node: string): void {
    if (node !== this.self.id) throw new TandemError(errors.LEASE_STORE, `this peer store speaks for ${this.self.id}, not ${node}`);
    if (this.closed) throw new TandemError(errors.LEASE_STORE, 'the peer store is closed');
  }

  private state(key: string): KeyState {
    let ks = this.keys.get(key);
    if (ks === undefined) {
      ks = newKeyState(key);
      this.keys.set(key, ks);
    }
    return ks;
  }

  /** Tells listeners about a change of holder, epoch, serving or offer (not of time left). */
  private changed(ks: KeyState): void {
    if (publishView(ks, viewOf(ks, now()))) ks.onChange?.();
  }

  private take(ks: KeyState, t: number, priority: number): Promise<Lease> {
    ks.holder = this.self.id;
    ks.holderBoot = this.boot;
    ks.epoch = Math.max(ks.epoch, ks.maxEpoch) + 1;
    ks.maxEpoch = ks.epoch;
    ks.priority = priority;
    ks.serving = false;
    ks.offeredTo = null;
    // Kept alive by tick() until the elector confirms with its first renew.
    ks.expiresAt = t + this.opts.handoverTimeout;
    this.armExpiry(ks, t);
    this.changed(ks);
    return this.broadcast(this.holdAdvert(ks)).then(
      () => viewOf(ks, now()),
      (err: Error) => {
        // Nobody heard us take it: do not keep a lease the others cannot know about.
        clearLease(ks);
        this.changed(ks);
        throw err;
      },
    );
  }

  private holdAdvert(ks: KeyState): HoldAdvert {
    return { t: 'hold', k: ks.key, e: ks.epoch, p: ks.priority, r: this.opts.leaseDuration, sv: ks.serving, o: ks.offeredTo };
  }

  /** Preemption: offers the key to `n` once this holder is ready to let it go (opts.beforeOffer). */
  private offerTo(ks: KeyState, n: string, epoch: number): Promise<void> {
    const stillMay = () => ks.holder === this.self.id && ks.epoch === epoch && mayOffer(ks);
    return offerAfter(ks, () => this.opts.beforeOffer?.(ks.key), stillMay, () => {
      ks.offeredTo = n;
      ks.offerUntil = now() + this.opts.handoverTimeout;
      this.changed(ks);
      void this.broadcast(this.holdAdvert(ks)).catch(() => {});
    });
  }

  private expireIfDue(ks: KeyState, t: number): void {
    if (ks.holder !== null && t >= ks.expiresAt) {
      clearLease(ks);
      this.changed(ks);
    }
  }

  private armExpiry(ks: KeyState, t: number): void {
    if (ks.expiryTimer !== null) clearTimeout(ks.expiryTimer);
    // Its own timer rather than the next tick: a dead host must cost the lease, not the
    // lease plus up to a renew interval.
    ks.expiryTimer = setTimeout(() => {
      ks.expiryTimer = null;
      this.expireIfDue(ks, now());
    }, Math.max(0, ks.expiresAt - t) + 1);
  }

  private tick(): void {
    const t = now();
    for (const ks of this.keys.values()) {
      this.expireIfDue(ks, t);
      if (ks.holder === this.self.id && offerLapsed(ks.offeredTo, ks.releasing, ks.offerUntil, t)) {
        ks.offeredTo = null;
        this.changed(ks);
      }
      if (ks.holder === this.self.id) {
        // A serving holder advertises on renew only, so an elector that stopped renewing
        // stops the adverts; a pending or handing-over lease is kept alive from here.
        if (ks.releasing) {
          ks.expiresAt = t + this.opts.leaseDuration;
          this.armExpiry(ks, t);
        }
        if (!ks.serving || ks.releasing) void this.broadcast(this.holdAdvert(ks)).catch(() => {});
      } else {
        const competing = t - ks.claimAt < this.opts.leaseDuration;
        void this.broadcast({ t: 'cand', k: ks.key, p: competing ? ks.claimPriority : 0, e: ks.maxEpoch }).catch(() => {});
      }
    }
  }

  /** Sends to every peer; rejects when not one send succeeded (no peers: resolves). */
  private broadcast(advert: Advert): Promise<void> {
    if (this.closed || this.peers.size === 0) return Promise.resolve();
    const datagram = seal(this.key, { n: this.self.id, b: this.boot, s: ++this.seq, a: advert });
    const sent = this.transport.send(datagram);
    const t = this.transport.stats;
    this.stats.sent = t.sent;
    this.stats.sendErrors = t.sendErrors;
    this.stats.multicastSent = t.multicastSent;
    return sent;
  }

  private onDatagram(msg: Buffer, size: number): void {
    if (this.closed) return;
    const admitted = admitDatagram(this.key, msg, size, this.peers, this.stats);
    if (admitted === null) return;
    const { peer, envelope: { n, b, a } } = admitted;
    const t = now();
    peer.heardAt = t;
    const ks = this.state(a.k);
    this.expireIfDue(ks, t);
    // A holder that restarted forgot its lease: whatever its old boot held is void.
    if (ks.holder === n && ks.holderBoot !== b) {
      clearLease(ks);
      this.changed(ks);
    }
    if (a.e > ks.maxEpoch) ks.maxEpoch = a.e;
    switch (a.t) {
      case 'hold':
        ks.candidates.set(n, { priority: a.p, at: t });
        this.onHold(ks, n, b, a, t);
        break;
      case 'cand':
        ks.candidates.set(n, { priority: a.p, at: t });
        if (a.p === 0 && ks.holder === this.self.id && ks.offeredTo === n) this.withdrawOffer(ks);
        // It says it does not hold the key: its release advert must have been lost.
        if (ks.holder === n) {
          clearLease(ks);
          this.changed(ks);
        }
        break;
      case 'rel':
        ks.candidates.delete(n);
        if (ks.holder === n && ks.epoch === a.e) {
          clearLease(ks);
          this.changed(ks);
        }
        break;
      case 'take':
        if (ks.holder === this.self.id && mayOffer(ks) && a.p > ks.priority && a.e === ks.epoch) void this.offerTo(ks, n, a.e);
        break;
    }
    if (ks.holder === this.self.id && ks.maxEpoch > ks.epoch) {
      // Someone held this key at a newer epoch while we did not hear them (a partition,
      // now healed) and has already stepped aside. Clients may still point at them, so
      // announce again, and move past their epoch to fence it; waiting for their holder
      // advert to arrive first would depend on the order of the adverts.
      ks.epoch = ks.maxEpoch + 1;
      ks.maxEpoch = ks.epoch;
      this.opts.log?.warn({ vip: ks.key, peer: n, epoch: ks.epoch }, `ha: ${ks.key}: ${n} held it at a newer epoch meanwhile; keeping it at epoch ${ks.epoch}`);
      this.changed(ks);
      void this.broadcast(this.holdAdvert(ks)).catch(() => {});
    }
  }

  private onHold(ks: KeyState, n: string, boot: number, a: HoldAdvert, t: number): void {
    // A predecessor still offering the lease to its successor, who already took it with a
    // newer epoch: it has not heard the successor yet and will step aside when it does.
    if (ks.holder !== null && a.o === ks.holder && a.e < ks.epoch) return;
    if (ks.holder === this.self.id) {
      if (n === ks.offeredTo && a.e > ks.epoch) {
        this.adopt(ks, n, boot, a, t); // the handover was taken
        return;
      }
      if (beats(a.p, a.e, n, ks.priority, ks.epoch, this.self.id)) {
        this.opts.log?.warn({ vip: ks.key, peer: n, peerPriority: a.p, peerEpoch: a.e, epoch: ks.epoch, outcome: 'yield' }, `ha: ${ks.key}: ${n} also holds it (priority ${a.p}, epoch ${a.e}); yielding`);
        this.adopt(ks, n, boot, a, t);
        return;
      }
      const conflict = `${n}:${boot}:${a.e}`;
      if (conflict !== ks.lastConflict) {
        ks.lastConflict = conflict;
        // Move past both epochs: fences the loser and makes our elector announce again.
        ks.epoch = Math.max(ks.epoch, ks.maxEpoch) + 1;
        ks.maxEpoch = ks.epoch;
        this.opts.log?.warn({ vip: ks.key, peer: n, peerPriority: a.p, peerEpoch: a.e, epoch: ks.epoch, outcome: 'keep' }, `ha: ${ks.key}: ${n} also holds it (priority ${a.p}, epoch ${a.e}); keeping it at epoch ${ks.epoch}`);
        this.changed(ks);
      }
      void this.broadcast(this.holdAdvert(ks)).catch(() => {});
      return;
    }
    const current = ks.holder;
    // The successor of a handover we saw offered wins even at a lower priority.
    const successor = ks.offeredTo === n && a.e > ks.epoch;
    if (current === null || current === n || successor || beats(a.p, a.e, n, ks.priority, ks.epoch, current)) this.adopt(ks, n, boot, a, t);
  }

  private adopt(ks: KeyState, n: string, boot: number, a: HoldAdvert, t: number): void {
    ks.holder = n;
    ks.holderBoot = boot;
    ks.epoch = a.e;
    ks.priority = a.p;
    ks.serving = a.sv;
    ks.offeredTo = a.o;
    ks.expiresAt = t + a.r;
    this.armExpiry(ks, t);
    this.changed(ks);
  }

  /** The node we offered the lease to stopped competing or died: the offer is off. */
  private withdrawOffer(ks: KeyState): void {
    ks.offeredTo = null;
    this.changed(ks);
  }

  private onAlive(node: string, boot: number): void {
    const peer = this.peers.get(node);
    if (peer === undefined) return;
    peer.guard.provenBoot = boot;
    if (peer.guard.deadBoot === boot) peer.guard.deadBoot = -1;
    peer.deadAt = -Infinity;
  }

  private onDead(node: string, boot: number): void {
    const peer = this.peers.get(node);
    if (peer === undefined) return;
    peer.guard.deadBoot = boot;
    peer.deadAt = now();
    for (const ks of this.keys.values()) {
      ks.candidates.delete(node);
      if (ks.holder === this.self.id && ks.offeredTo === node) this.withdrawOffer(ks);
      if (ks.holder === node && ks.holderBoot === boot) {
        this.opts.log?.warn({ vip: ks.key, holder: node, epoch: ks.epoch }, `ha: ${ks.key}: holder ${node} died; its lease is void`);
        clearLease(ks);
        this.changed(ks);
      }
    }
  }
}
