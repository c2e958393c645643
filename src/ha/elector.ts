// One elector per VIP: competes for the VIP's lease in a LeaseStore, renews it, gives it
// up, and turns every change into a hook run and a VipEvent. Kept apart as in kube-vip:
// the store knows leases, the hook knows addresses, the elector knows neither's
// internals and only applies policy:
//
// * priority and preemption: the claim it makes (handover.ts: a node asks a
//   lower-priority holder for the VIP only after it has been ready for the preempt delay);
// * health: a node whose `ready()` turns false goes to FAULT and hands its leases over;
//   it competes again once ready;
// * make-before-break: a node that took a lease confirms it (first renew) only after its
//   MASTER hook succeeded, and a node that lost a lease to a successor keeps the VIP until
//   the successor serves and its own answers in flight are out (departure.ts);
// * doubt: leader-only work, the MASTER hook first, runs under an AbortSignal that aborts
//   once the lease is lost or a renewal has not been confirmed for half a lease, long
//   before the lease can expire elsewhere.

import { systemClock, type Clock, type TimerHandle } from './clock.ts';
import { claimAt } from './handover.ts';
import type { HookState } from './hook.ts';
import { freeLease, type Lease } from './lease-store.ts';
import { Departure } from './departure.ts';
import { RemovalRetry } from './removal-retry.ts';
import type { ElectorOptions, VipStatus } from './elector-options.ts';
import { StatePublisher, hookStateOf, type Phase } from './vip-state.ts';

export type { ElectorOptions, VipStatus } from './elector-options.ts';

/** Leadership of one VIP. */
export class Elector {
  private readonly opts: ElectorOptions;
  private readonly clock: Clock;
  private readonly key: string;
  private readonly priority: number;
  private phase: Phase;
  private view: Lease;
  /** Epoch of the lease this node holds (or held last). */
  private epoch: number;
  private readySince: number | null;
  private faultUntil: number;
  private handingUntil: number;
  readonly departure: Departure;
  /** When the lease is in doubt unless a renewal succeeds first. */
  private doubtAt: number;
  /** When this node's lease runs out, by its last confirmed renewal; 0 when unknown. */
  private leaseEndsAt: number;
  private doubtTimer: TimerHandle | null;
  private ticker: TimerHandle | null;
  private unwatch: (() => void) | null;
  private leader: AbortController | null;
  /** Set while a stepped-down lease is still being released in the background. */
  private settling: Promise<void> | null;
  /** Runs a failed BACKUP, FAULT or STOP hook again until it works or the state changes. */
  private readonly removal: RemovalRetry;
  private chain: Promise<void>;
  private queued: boolean;
  private wantTick: boolean;
  private renewFailures: number;
  private since: number;
  private readonly publisher: StatePublisher;

  constructor(opts: ElectorOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    this.key = opts.vip.name;
    this.priority = opts.vip.priority[opts.node] ?? 0;
    this.phase = 'init';
    this.view = freeLease(this.key, 0);
    this.epoch = 0;
    this.readySince = null;
    this.faultUntil = 0;
    this.handingUntil = 0;
    this.departure = new Departure(opts.vacate, opts.linger, () => this.phase === 'master', opts.handoverTimeout + opts.renewEvery);
    this.doubtAt = Infinity;
    this.leaseEndsAt = 0;
    this.doubtTimer = this.ticker = null;
    this.unwatch = this.leader = this.settling = null;
    this.removal = new RemovalRetry({
      key: opts.vip.name, hook: opts.hook, leaseDuration: opts.leaseDuration, stopRetryFor: opts.stopRetryFor ?? opts.handoverTimeout,
      log: opts.log, current: () => this.hookState(), epoch: () => this.epoch,
    });
    this.chain = Promise.resolve();
    this.queued = false;
    this.wantTick = false;
    this.renewFailures = 0;
    this.since = Date.now();
    this.publisher = new StatePublisher(opts.bus, opts.node);
  }

  /** Removes the VIP defensively (BACKUP hook), then starts competing. */
  async start(): Promise<void> {
    // After a crash the VIP may still sit on this host's interface; it must go before
    // this node competes, or two hosts would answer for it.
    const removed = await this.opts.hook.run('BACKUP', 0);
    this.phase = 'backup';
    // Retried in the background: competing need not wait, but the stale VIP must go.
    if (removed === 'failed') void this.removal.retry('BACKUP', this.removal.begin());
    this.publishIfChanged();
    this.unwatch = this.opts.store.watch(this.key, (lease) => {
      this.view = lease;
      // Lost while the MASTER hook runs: stop it now, not once it is done.
      if (this.phase === 'acquiring' && lease.holder !== this.opts.node && lease.epoch >= this.epoch) this.abortLeader();
      this.schedule(false);
    });
    this.tick();
  }

  /** A planned handover of a held VIP; false when this node does not hold it. */
  release(): Promise<boolean> {
    return this.exclusive(async () => {
      if (this.phase !== 'master') return false;
      await this.giveUp('BACKUP');
      // Preemption waits for the full delay again, or the VIP would bounce straight back.
      this.readySince = null;
      return true;
    });
  }

  /** Hands a held VIP over (or withdraws), runs the STOP hook and stops competing. */
  stop(): Promise<void> {
    if (this.ticker !== null) this.clock.clearTimeout(this.ticker);
    this.ticker = null;
    return this.exclusive(async () => {
      if (this.phase === 'stopped') return;
      if (this.phase === 'master' || this.phase === 'acquiring' || this.phase === 'handing') {
        await this.giveUp('STOP');
      } else {
        await this.opts.store.release(this.key, this.opts.node).catch(() => {});
        await this.enter('stopped');
      }
      await this.settling;
      this.phase = 'stopped';
      this.clearDoubt();
      this.unwatch?.(); this.unwatch = null;
    });
  }

  status(): VipStatus {
    const v = this.opts.vip;
    const held = this.phase === 'master' || this.phase === 'handing' || this.phase === 'releasing';
    return {
      name: v.name,
      address: v.address,
      interface: v.interface,
      state: this.hookState(),
      holder: this.view.holder,
      epoch: held ? Math.max(this.epoch, this.view.epoch) : this.view.epoch,
      // This node's own lease only, as docs/admin-api.md says; a standby shows 0.
      // Counted down from the last confirmed renewal, so a sidecar can fence on it.
      leaseRemainingMs: held && this.view.holder === this.opts.node ? this.leaseLeft() : 0,
      leaseDuration: this.opts.leaseDuration,
      priority: this.priority,
      renewFailures: this.renewFailures,
      since: this.since,
    };
  }

  // ---- the loop ----

  /** A step every renew interval, on the elector's clock. */
  private tick(): void {
    this.ticker = this.clock.setTimeout(() => this.tick(), this.opts.renewEvery);
    this.schedule(true);
  }

  /** Runs `fn` after everything queued before it; steps, release and stop never overlap. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.chain.then(fn);
    this.chain = result.then(
      () => {},
      (err: Error) => this.opts.log.error({ vip: this.key, err }, `ha: ${this.key}: ${err.message}`),
    );
    return result;
  }

  /** Queues one step; steps requested while one waits are merged into it. */
  private schedule(tick: boolean): void {
    if (tick) this.wantTick = true;
    if (this.queued || this.phase === 'stopped') return;
    this.queued = true;
    void this.exclusive(async () => {
      this.queued = false;
      const isTick = this.wantTick;
      this.wantTick = false;
      await this.step(isTick);
    });
  }

  private async step(tick: boolean): Promise<void> {
    const t = this.clock.now();
    const ready = this.opts.ready();
    if (!ready) this.readySince = null;
    else if (this.readySince === null) this.readySince = t;
    const view = this.view;
    const node = this.opts.node;
    switch (this.phase) {
      case 'backup': {
        if (!ready) {
          void this.enter('fault');
          await this.opts.store.release(this.key, node).catch(() => {});
          return;
        }
        if (this.settling !== null || this.priority <= 0) {
          this.publishIfChanged();
          return;
        }
        if (!tick && view.holder !== null && view.offeredTo !== node) {
          this.publishIfChanged();
          return;
        }
        let lease: Lease;
        try {
          lease = await this.opts.store.acquire(this.key, claimAt(node, this.priority, this.opts.vip, this.readySince, t));
        } catch (err) {
          this.opts.log.warn({ vip: this.key, err: (err as Error).message }, `ha: ${this.key}: acquire failed: ${(err as Error).message}`);
          return;
        }
        if (lease.holder === node && lease.serving) {
          // A lease we stepped down from without the store hearing of it (doubt): not
          // ours to serve again; release it (again) and wait for it to end.
          await this.opts.store.release(this.key, node).catch(() => {});
        } else if (lease.holder === node) {
          await this.becomeMaster(lease);
        } else {
          this.publishIfChanged();
        }
        return;
      }
      case 'master': {
        if (view.holder !== node) return this.lost(view);
        if (!ready) {
          this.opts.log.warn({ vip: this.key, epoch: this.epoch, reason: 'not ready' }, `ha: ${this.key}: not ready (no listener or no available backend): handing the VIP over`);
          return this.giveUp('FAULT');
        }
        if (t >= this.doubtAt) return this.doubt();
        if (view.epoch !== this.epoch) this.reannounce(view.epoch);
        if (tick) await this.renew();
        return;
      }
      case 'handing': {
        if (view.holder === node) {
          // The successor never confirmed and the lease came back to us: we still serve.
          this.phase = 'master';
          void this.departure.set(false);
          return;
        }
        if (view.holder === null || view.serving || t >= this.handingUntil) {
          await this.departure.linger();
          if (this.view.holder === node) return; // it came back meanwhile: the next step keeps it
          void this.enter('backup');
          this.schedule(true);
        }
        return;
      }
      case 'fault': {
        if (ready && t >= this.faultUntil) {
          void this.enter('backup');
          this.schedule(true);
        }
        return;
      }
      default:
        return;
    }
  }

  private async becomeMaster(lease: Lease): Promise<void> {
    const node = this.opts.node;
    this.phase = 'acquiring';
    this.removal.cancel();
    this.epoch = lease.epoch;
    const leader = new AbortController();
    this.leader = leader;
    const outcome = await this.opts.hook.run('MASTER', lease.epoch, leader.signal);
    if (this.phase !== 'acquiring') return;
    if (leader.signal.aborted) {
      this.opts.log.warn({ vip: this.key, epoch: lease.epoch, reason: 'lease lost' }, `ha: ${this.key}: lease lost while the MASTER hook ran: hook stopped`);
      void this.enter('backup');
      return;
    }
    if (outcome !== 'ok') {
      this.opts.log.error({ vip: this.key, epoch: lease.epoch, reason: 'MASTER hook failed' }, `ha: ${this.key}: MASTER hook failed: giving the lease up (FAULT)`);
      this.abortLeader();
      this.faultUntil = this.clock.now() + (this.opts.faultHold ?? 2 * this.opts.leaseDuration);
      await this.opts.store.release(this.key, node).catch(() => {});
      void this.enter('fault');
      return;
    }
    if (this.view.holder !== node && this.view.epoch >= lease.epoch) {
      // Lost while the hook ran (another holder won a conflict): undo.
      this.abortLeader();
      void this.enter('backup');
      return;
    }
    const t0 = this.clock.now();
    let renewed: Lease;
    try {
      renewed = await this.opts.store.renew(this.key, node);
    } catch (err) {
      this.countRenewFailure(err as Error);
      this.abortLeader();
      await this.opts.store.release(this.key, node).catch(() => {});
      void this.enter('backup');
      return;
    }
    if (renewed.holder !== node) {
      this.abortLeader();
      void this.enter('backup');
      return;
    }
    this.view = renewed;
    this.epoch = renewed.epoch;
    this.armDoubt(t0, renewed.remaining);
    this.phase = 'master';
    void this.enter('master');
    try {
      this.opts.lead?.(leader.signal, renewed);
    } catch (err) {
      this.opts.log.error({ vip: this.key, epoch: this.epoch, err: (err as Error).message }, `ha: ${this.key}: leader work failed to start: ${(err as Error).message}`);
    }
  }

  private async renew(): Promise<void> {
    const t0 = this.clock.now();
    let lease: Lease;
    try {
      lease = await this.opts.store.renew(this.key, this.opts.node);
    } catch (err) {
      this.countRenewFailure(err as Error);
      return;
    }
    if (this.phase !== 'master') return;
    if (lease.holder !== this.opts.node) return this.lost(lease);
    this.armDoubt(t0, lease.remaining);
  }

  /** The lease went to someone else (split brain lost, or a handover we granted). */
  private lost(view: Lease): void {
    this.abortLeader();
    this.clearDoubt();
    if (view.holder !== null && !view.serving) {
      // Make-before-break: keep the VIP until the successor has it up.
      this.phase = 'handing';
      this.handingUntil = this.clock.now() + this.opts.handoverTimeout;
      void this.departure.set(true);
      return;
    }
    void this.enter('backup');
  }

  /** Renewals stopped being confirmed: step down before the lease can expire elsewhere. */
  private doubt(): void {
    this.opts.log.warn({ vip: this.key, epoch: this.epoch, reason: 'renewal not confirmed' }, `ha: ${this.key}: lease renewal not confirmed for half a lease: stepping down`);
    this.abortLeader();
    this.clearDoubt();
    void this.enter('backup');
    this.settling = this.opts.store.release(this.key, this.opts.node).catch(() => {}).then(() => {
      this.settling = null;
    });
  }

  /** A planned release: hand over (the successor serves first), then run `state`'s hook. */
  private async giveUp(state: 'BACKUP' | 'FAULT' | 'STOP'): Promise<void> {
    this.abortLeader();
    this.clearDoubt();
    this.phase = 'releasing';
    await this.departure.set(true, true);
    await this.opts.store.release(this.key, this.opts.node).catch((err: Error) => this.opts.log.warn({ vip: this.key, epoch: this.epoch, err: err.message }, `ha: ${this.key}: release failed: ${err.message}`));
    await this.departure.linger();
    // Awaited: after a release or stop, the VIP is off this host when the caller goes on.
    await this.enter(state === 'BACKUP' ? 'backup' : state === 'FAULT' ? 'fault' : 'stopped');
  }

  /** Split brain won (or the store moved our epoch): announce the VIP again. */
  private reannounce(epoch: number): void {
    const previousEpoch = this.epoch;
    this.epoch = epoch;
    this.opts.log.warn({ vip: this.key, epoch, previousEpoch }, `ha: ${this.key}: epoch moved to ${epoch} while holding: announcing again`);
    void this.opts.hook.run('MASTER', epoch, this.leader?.signal).then((outcome) => {
      if (outcome === 'failed') this.schedule(false);
    });
    this.publishIfChanged();
  }

  /**
   * Changes phase, runs the hook of the new state and publishes it. The returned promise
   * is the hook's; the loop does not wait for it, so a slow hook never delays the next
   * renewal or competition (the runner keeps hooks of one VIP in order). A failed
   * BACKUP, FAULT or STOP hook is retried (see removal-retry.ts); for STOP the promise
   * includes the retries, for the others only the first run, so a hook that keeps
   * failing never blocks the loop.
   */
  private enter(phase: 'backup' | 'master' | 'fault' | 'stopped'): Promise<void> {
    const before = this.hookState();
    this.phase = phase;
    const state = this.hookState();
    let hook = Promise.resolve();
    if (state !== before || phase === 'master') this.since = Date.now();
    // The MASTER hook already ran in becomeMaster.
    if (phase !== 'master' && state !== before) {
      const removal = this.removal.begin();
      const first = this.opts.hook.run(state, this.epoch);
      const retried = first.then((outcome) => (outcome === 'failed' ? this.removal.retry(state, removal) : undefined));
      hook = state === 'STOP' ? retried : first.then(() => {});
    }
    this.publishIfChanged();
    if (phase === 'master') void this.departure.set(false);
    else void hook.then(() => (this.hookState() === 'MASTER' ? undefined : this.departure.set(false)));
    return hook;
  }

  private hookState(): HookState {
    return hookStateOf(this.phase);
  }

  private publishIfChanged(): void {
    this.publisher.publishIfChanged(this.status());
  }

  private armDoubt(renewStarted: number, remaining: number): void {
    // Measured from when the renewal was sent, so the time the answer took counts too.
    this.doubtAt = renewStarted + remaining / 2;
    this.leaseEndsAt = renewStarted + remaining;
    if (this.doubtTimer !== null) this.clock.clearTimeout(this.doubtTimer);
    this.doubtTimer = this.clock.setTimeout(() => this.schedule(false), Math.max(0, this.doubtAt - this.clock.now()) + 1);
  }

  private leaseLeft(): number {
    return this.leaseEndsAt === 0 ? this.view.remaining : Math.max(0, Math.round(this.leaseEndsAt - this.clock.now()));
  }

  private clearDoubt(): void {
    this.doubtAt = Infinity;
    this.leaseEndsAt = 0;
    if (this.doubtTimer !== null) this.clock.clearTimeout(this.doubtTimer);
    this.doubtTimer = null;
  }

  private abortLeader(): void {
    this.leader?.abort(new Error(`lease of ${this.key} lost or in doubt`));
    this.leader = null;
  }

  private countRenewFailure(err: Error): void {
    this.renewFailures++;
    this.opts.renewFailed?.();
    this.opts.log.warn({ vip: this.key, epoch: this.epoch, renewFailures: this.renewFailures, err: err.message }, `ha: ${this.key}: renewal failed: ${err.message}`);
  }
}
