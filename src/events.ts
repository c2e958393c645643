import { EventEmitter } from 'node:events';

/** A backend's state as operators see it. */
export type BackendState = 'up' | 'down' | 'ejected' | 'draining' | 'disabled';

export interface BackendEvent {
  readonly type: 'backend';
  readonly pool: string;
  readonly backend: string;
  readonly state: BackendState;
  readonly reason: string;
  /** Set when the change is of the weight an operator gave (reason `admin`) or a reload took back. */
  readonly weight?: number;
}

export interface ReloadEvent {
  readonly type: 'reload';
  readonly result: 'success' | 'failure';
  readonly errors: readonly string[];
}

export interface VipEvent {
  readonly type: 'vip';
  readonly vip: string;
  /** MASTER, BACKUP, FAULT or STOP, as the hook receives it. */
  readonly state: 'MASTER' | 'BACKUP' | 'FAULT' | 'STOP';
  readonly node: string;
  readonly holder: string | null;
  readonly epoch: number;
  readonly address: string;
  readonly interface: string;
  /** Milliseconds of lease left when the event was made; 0 when not held. */
  readonly leaseRemaining: number;
}

/**
 * A VIP hook run finished. The `vip-agent` sidecar reports its runs through the admin
 * API (POST /api/v1/vips/:vip/hook); with `ha.agent`, the proxy confirms a lease only
 * once the agent reported its MASTER run done.
 */
export interface HookEvent {
  readonly type: 'hook';
  readonly vip: string;
  readonly state: 'MASTER' | 'BACKUP' | 'FAULT' | 'STOP';
  readonly epoch: number;
  readonly outcome: 'ok' | 'failed';
  /** How long the run took, as its runner measured it. */
  readonly ms: number;
}

export type TandemEvent = BackendEvent | ReloadEvent | VipEvent | HookEvent;

/**
 * The one event bus of an instance: pools, health, reload and HA emit on it; the admin
 * API's event stream and the metrics read from it. Emitting is cheap and synchronous,
 * and happens on state changes only, never per request.
 */
export class EventBus extends EventEmitter<{ event: [TandemEvent] }> {
  publish(event: TandemEvent): void {
    this.emit('event', event);
  }
}
