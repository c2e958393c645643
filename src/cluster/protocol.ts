// The messages between a cluster primary and its workers, over the IPC channel that
// node:cluster opens with `serialization: 'advanced'` (structured clone: the compiled
// Config with its Map, typed arrays and plain objects cross whole). Types only.

import type { Config } from '../config/types.ts';
import type { AdminState } from '../pool/backend.ts';

/** What the primary's health checks and admin decide about one backend; workers apply it. */
export interface BackendState {
  readonly pool: string;
  readonly backend: string;
  readonly healthy: boolean;
  readonly admin: AdminState;
  /** The effective weight (slow start ramps it in the primary). */
  readonly weight: number;
}

/** One worker's request counters for one label set, as RequestCounter keeps them. */
export interface CounterSnapshot {
  readonly listener: string;
  readonly route: string;
  readonly pool: string;
  readonly backend: string;
  /** Flat pairs: status code, count; only codes seen. */
  readonly codes: readonly number[];
  /** Non-cumulative bucket counts, +Inf last. */
  readonly buckets: Float64Array;
  readonly sum: number;
}

/** Everything a worker counts, since it started. */
export interface WorkerStats {
  readonly counters: readonly CounterSnapshot[];
  /** pool, backend, active, requests, failures. */
  readonly backends: readonly (readonly [string, string, number, number, number])[];
  /** listener name, open client connections. */
  readonly listeners: readonly (readonly [string, number])[];
}

/** A bound listener as a worker reports it. */
export interface BoundListener {
  readonly name: string;
  readonly address: string;
}

/** Primary to worker. */
export type ToWorker =
  | { readonly t: 'start'; readonly config: Config; readonly states: readonly BackendState[] }
  | { readonly t: 'state'; readonly state: BackendState }
  /** An active check that began `age` ms ago passed: end ejections made before it. */
  | { readonly t: 'reinstate'; readonly pool: string; readonly backend: string; readonly age: number }
  | { readonly t: 'prepare'; readonly id: number; readonly config: Config }
  | { readonly t: 'commit'; readonly id: number; readonly config: Config; readonly states: readonly BackendState[] }
  | { readonly t: 'abort'; readonly id: number }
  | { readonly t: 'snapshot'; readonly id: number }
  | { readonly t: 'stop'; readonly timeout: number };

/** Worker to primary. `id` answers the request of the same id. */
export type FromWorker =
  /** The worker listens for messages now; the primary answers with `start`. */
  | { readonly t: 'hello' }
  | { readonly t: 'ready'; readonly listeners: readonly BoundListener[] }
  | { readonly t: 'failed'; readonly code: string; readonly message: string }
  | { readonly t: 'prepared'; readonly id: number; readonly error: string | null }
  | { readonly t: 'committed'; readonly id: number; readonly error: string | null; readonly listeners: readonly BoundListener[] }
  | { readonly t: 'ejected'; readonly pool: string; readonly backend: string; readonly ejected: boolean; readonly reason: string }
  /** id 0: pushed on the worker's own timer. */
  | { readonly t: 'stats'; readonly id: number; readonly stats: WorkerStats };

/** True for the messages of this protocol (node:cluster's own never have `t`). */
export function isFromWorker(msg: unknown): msg is FromWorker {
  return typeof msg === 'object' && msg !== null && typeof (msg as { t?: unknown }).t === 'string';
}

/** True for the messages of this protocol. */
export function isToWorker(msg: unknown): msg is ToWorker {
  return typeof msg === 'object' && msg !== null && typeof (msg as { t?: unknown }).t === 'string';
}
