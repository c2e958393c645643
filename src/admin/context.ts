// What every admin route gets: the runtime to read and change, the metrics to scrape,
// the event stream to attach clients to.

import type { FastifyReply } from 'fastify';
import type { ErrorSpec } from '../errors.ts';
import type { EventStream } from './event-stream.ts';
import type { Metrics } from './metrics.ts';
import type { AdminRuntime } from './runtime.ts';

export interface AdminContext {
  readonly runtime: AdminRuntime;
  readonly metrics: Metrics;
  readonly events: EventStream;
}

/** Requests that presented the right token (the status shows the config path only to them). */
export const authenticated = new WeakMap<object, boolean>();

/**
 * Answers with a catalogue error in the shape of every answer tandem gives itself:
 * `{ error, message }` (plus `extra` fields) with its status. `code` repeats `error`:
 * the admin API's older shape, kept for the clients that read it.
 */
export function sendError(reply: FastifyReply, which: ErrorSpec, detail?: string, extra?: Record<string, unknown>): FastifyReply {
  const message = detail === undefined ? which.message : `${which.message}: ${detail}`;
  return reply.code(which.status).header('cache-control', 'no-store').send({ error: which.code, code: which.code, message, ...extra });
}
