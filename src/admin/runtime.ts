// What the admin side needs from a running instance. src/control/control-plane.ts implements it; the
// admin server, the metrics and the event stream read only through it, so that the
// runtime can swap config and pools on reload without the admin side noticing.

import type { Config } from '../config/types.ts';
import type { Pool } from '../pool/pool.ts';
import type { EventBus, ReloadRequest } from '../events.ts';

export interface ReloadOutcome { ok: boolean; errors: string[] }
export interface VipStatusView { name: string; address: string; interface: string; state: 'MASTER'|'BACKUP'|'FAULT'|'STOP'; holder: string | null; epoch: number; leaseRemainingMs: number }
export interface ListenerView {
  name: string; address: string; bound: boolean; connections: number;
  /** Counts since start: `refused` connections, `http2-<reason>` sessions a guard closed. */
  events: Readonly<Record<string, number>>;
}
export interface AdminRuntime {
  config(): Config;                       // the current compiled config
  pools(): ReadonlyMap<string, Pool>;     // current pools (swapped atomically on reload)
  listeners(): ListenerView[];
  bus: EventBus;                          // state-change events
  reload(request?: ReloadRequest): Promise<ReloadOutcome>; // load+validate+compile+swap; errors are FILE:LINE:COL lines
  vips(): VipStatusView[];                // [] without HA
  releaseVip(name: string): Promise<boolean>;   // false: unknown VIP
  node: string | null;
  leaseDurationMs: number | null;
  /** Brings per-backend counts up to date before a read (a cluster primary asks its workers); optional. */
  gather?(): Promise<void>;
}
