// What an elector is given (ElectorOptions) and what it shows of its VIP (VipStatus).

import type { VipConfig } from '../config/types.ts';
import type { EventBus } from '../events.ts';
import type { Logger } from '../log.ts';
import type { Clock } from './clock.ts';
import type { HookRunner, HookState } from './hook.ts';
import type { Lease, LeaseStore } from './lease-store.ts';

/** One VIP as the admin API and status page show it. */
export interface VipStatus {
  readonly name: string;
  readonly address: string;
  readonly interface: string;
  readonly state: HookState;
  readonly holder: string | null;
  readonly epoch: number;
  /** Lease left on the holder, as this node counts it; 0 when free. */
  readonly leaseRemainingMs: number;
  readonly leaseDuration: number;
  /** This node's priority for the VIP (0: never holds it). */
  readonly priority: number;
  /** Renewals of this node's lease that failed since start. */
  readonly renewFailures: number;
  /** Wall-clock time (ms) of the last change of state. */
  readonly since: number;
}

export interface ElectorOptions {
  readonly vip: VipConfig;
  readonly node: string;
  readonly store: LeaseStore;
  readonly hook: HookRunner;
  readonly bus: EventBus;
  /** True when this node can serve the VIP (listeners bound, a backend available). */
  readonly ready: () => boolean;
  readonly leaseDuration: number;
  readonly renewEvery: number;
  /** How long a node that lost its lease to a successor keeps the VIP waiting for it to serve. */
  readonly handoverTimeout: number;
  /** Time in FAULT after a failed MASTER hook before competing again (default 2 leases). */
  readonly faultHold?: number;
  /** How long stop() keeps retrying a failed STOP hook (default: handoverTimeout). */
  readonly stopRetryFor?: number;
  readonly log: Logger;
  /** Called on every failed renewal (for `tandem_lease_renew_failures_total`). */
  readonly renewFailed?: () => void;
  /**
   * Leader-only work, started once this node serves the VIP. `signal` (the one its MASTER
   * hook already ran under) aborts the moment the lease is lost or in doubt, before it
   * can expire on another node.
   */
  readonly lead?: (signal: AbortSignal, lease: Lease) => void;
  /** Time and timers (default: performance.now() and Node's timers; tests move a clock by hand). */
  readonly clock?: Clock;
  /** The VIP is about to leave this node in a planned handover, or not any more (see departure.ts). */
  readonly vacate?: (leaving: boolean, patient: boolean) => Promise<void>;
  /** The successor serves: this node keeps the address until it answered what it received (see departure.ts). */
  readonly linger?: () => Promise<void>;
}
