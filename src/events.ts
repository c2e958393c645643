import { EventEmitter } from 'node:events';
import type { ConfigChanges } from './config/diff.ts';

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
  /** The state before this change; the same as `state` when only the effective weight changed. */
  readonly previous?: BackendState;
  /** The active health check whose result made the change, when one did. */
  readonly check?: CheckSummary;
  /** Who made an operator's change: the admin API client's address. */
  readonly actor?: string;
}

/** An active health check's result, as events and log lines carry it. */
export interface CheckSummary {
  readonly ok: boolean;
  /** The HTTP status the backend answered, or null (refused, timed out, reset...). */
  readonly status: number | null;
  /** `status 500`, `ECONNREFUSED`, `timeout after 1000ms`, `body lacks "ok"`... */
  readonly detail: string;
  readonly durationMs: number;
}

/** What asked for a reload: the SIGHUP signal or the admin API (POST /api/v1/reload). */
export type ReloadSource = 'SIGHUP' | 'api';

/** Who asked for a reload: the source, and for the API the client's address. */
export interface ReloadRequest {
  readonly source: ReloadSource;
  readonly client?: string;
}

export interface ReloadEvent {
  readonly type: 'reload';
  readonly result: 'success' | 'failure';
  readonly errors: readonly string[];
  readonly source?: ReloadSource;
  /** The admin API client that asked, for source `api`. */
  readonly client?: string;
  /** What the new config changed (src/config/diff.ts); on success only. */
  readonly changes?: ConfigChanges;
  readonly durationMs?: number;
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
  /**
   * True when this is a proxy with `ha.agent` asking the vip-agent to run the hook
   * (src/ha/agent-hook.ts), not the elector announcing a transition.
   */
  readonly hookRun?: boolean;
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
