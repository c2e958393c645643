// The one protocol between the control plane and its data planes. Each message travels
// one way and says one thing: the control plane sends configs, its backend verdicts and
// stop; a data plane sends its passive ejections and its counts, and answers the
// requests that carry an id. Between processes it goes over the IPC channel node:cluster
// opens with `serialization: 'advanced'` (structured clone: the compiled Config with its
// Map, typed arrays and plain objects cross whole); in one process (`--workers 0`) over
// the in-memory channel of src/channel/in-memory.ts. Types only.

import type { Config } from '../config/types.ts';
import type { AdminState } from '../pool/backend.ts';

/** What the control plane's health checks and admin decide about one backend; data planes apply it. */
export interface BackendState {
  readonly pool: string;
  readonly backend: string;
  readonly healthy: boolean;
  readonly admin: AdminState;
  /** The effective weight (slow start ramps it in the control plane). */
  readonly weight: number;
  /** An operator's weight until the next reload; null: the configured one. A data plane's own slow start ramps to it. */
  readonly runtimeWeight: number | null;
}

/** One data plane's request counters for one label set, as RequestCounter keeps them. */
export interface CounterSnapshot {
  readonly listener: string;
  readonly route: string;
  readonly pool: string;
  readonly backend: string;
  /** Flat pairs: status code, count; only codes seen. */
  readonly codes: readonly number[];
  /** Non-cumulative bucket counts of the duration, +Inf last. */
  readonly buckets: Float64Array;
  /** Non-cumulative bucket counts of the time to the backend's response head. */
  readonly upstream: Float64Array;
  /** RequestCounter.sums: durations, body bytes each way, retries, upstream times. */
  readonly sums: Float64Array;
  /** Flat pairs: error code, count; only codes seen. */
  readonly errors: readonly (string | number)[];
}

/** Everything a data plane counts, since it started. */
export interface DataPlaneStats {
  readonly counters: readonly CounterSnapshot[];
  /** pool, backend, active, requests, failures. */
  readonly backends: readonly (readonly [string, string, number, number, number])[];
  /** listener name, open client connections. */
  readonly listeners: readonly (readonly [string, number])[];
  /** listener, route, pool, result, Upgrade requests. */
  readonly upgrades: readonly (readonly [string, string, string, string, number])[];
  /** pool, error code, errors answered outside an exchange. */
  readonly rejected: readonly (readonly [string, string, number])[];
  /**
   * listener, event, count: `refused` (connections closed at once: listener
   * maxConnections reached), and `http2-<reason>` (HTTP/2 sessions a guard closed).
   */
  readonly listenerEvents: readonly (readonly [string, string, number])[];
}

/** A bound listener as a data plane reports it. */
export interface BoundListener {
  readonly name: string;
  readonly address: string;
}

/** Control plane to data plane. */
export type ToDataPlane =
  /** `count`: keep request counters (off only for the bare data plane of the benchmark). */
  | { readonly t: 'start'; readonly config: Config; readonly states: readonly BackendState[]; readonly count: boolean }
  | { readonly t: 'state'; readonly state: BackendState }
  /** An active check that began `age` ms ago passed: end ejections made before it. */
  | { readonly t: 'reinstate'; readonly pool: string; readonly backend: string; readonly age: number }
  | { readonly t: 'prepare'; readonly id: number; readonly config: Config }
  | { readonly t: 'commit'; readonly id: number; readonly config: Config; readonly states: readonly BackendState[] }
  | { readonly t: 'abort'; readonly id: number }
  | { readonly t: 'snapshot'; readonly id: number }
  /** A VIP's address is about to move away (`leaving`), or stays or is gone: see src/dataplane/vacate.ts. */
  | { readonly t: 'vacate'; readonly id: number; readonly address: string; readonly leaving: boolean; readonly wait: number }
  /** The VIP's new holder serves: answered (`vacated`) once no request on `address` awaits its answer, or after `wait` ms. */
  | { readonly t: 'linger'; readonly id: number; readonly address: string; readonly wait: number }
  /** Open the access log file again (SIGUSR1, after logrotate renamed it); answered with `reopened`. */
  | { readonly t: 'reopen'; readonly id: number }
  | { readonly t: 'stop'; readonly timeout: number };

/** Data plane to control plane. `id` answers the request of the same id. */
export type ToControlPlane =
  /** The data plane listens for messages now; the control plane answers with `start`. */
  | { readonly t: 'hello' }
  | { readonly t: 'ready'; readonly listeners: readonly BoundListener[] }
  | { readonly t: 'failed'; readonly code: string; readonly message: string }
  | { readonly t: 'prepared'; readonly id: number; readonly error: string | null }
  | { readonly t: 'committed'; readonly id: number; readonly error: string | null; readonly listeners: readonly BoundListener[] }
  /** The access log was opened again; error: why it could not be. */
  | { readonly t: 'reopened'; readonly id: number; readonly error: string | null }
  | { readonly t: 'ejected'; readonly pool: string; readonly backend: string; readonly ejected: boolean; readonly reason: string }
  /** id 0: pushed on the data plane's own timer. */
  | { readonly t: 'stats'; readonly id: number; readonly stats: DataPlaneStats }
  /** Connections on the vacated address still open (for `linger`: still busy) when the wait ended. */
  | { readonly t: 'vacated'; readonly id: number; readonly open: number };

/** True for the messages of this protocol (node:cluster's own never have `t`). */
export function isProtocolMessage(msg: unknown): boolean {
  return typeof msg === 'object' && msg !== null && typeof (msg as { t?: unknown }).t === 'string';
}
