// Operator control of single backends: drain (no new requests, in-flight ones finish),
// disable (drain, and health checks cannot bring it back), enable (undo both), and a
// runtime weight (HAProxy's `set weight`): kept until the next reload, which goes back
// to the configured weight.

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AdminState, Backend } from '../../pool/backend.ts';
import type { Pool } from '../../pool/pool.ts';
import { ramping } from '../../pool/slow-start.ts';
import { errors } from '../../errors.ts';
import { sendError } from '../context.ts';
import type { AdminContext } from '../context.ts';

interface BackendParams { pool: string; backend: string }

/** The largest weight a config takes (schema.ts), and so a runtime weight. */
export const MAX_WEIGHT = 1000;

/** What a backend call answers: the backend as it is now. */
function answer(pool: Pool, backend: Backend) {
  return { pool: pool.name, backend: backend.name, admin: backend.admin, state: backend.state() };
}

/** What a weight call answers: the above and its weights. */
function weightAnswer(pool: Pool, backend: Backend) {
  return { ...answer(pool, backend), weight: backend.config.weight, runtimeWeight: backend.runtimeWeight, effectiveWeight: backend.effectiveWeight };
}

export function backendRoutes(app: FastifyInstance, ctx: AdminContext): void {
  const find = (req: FastifyRequest<{ Params: BackendParams }>, reply: FastifyReply): { pool: Pool; backend: Backend } | null => {
    const { pool: poolName, backend: backendName } = req.params;
    const pool = ctx.runtime.pools().get(poolName);
    const backend = pool?.byName.get(backendName);
    if (pool === undefined || backend === undefined) {
      sendError(reply, errors.ADMIN_NOT_FOUND, pool === undefined ? `pool ${poolName}` : `backend ${backendName} in pool ${poolName}`);
      return null;
    }
    return { pool, backend };
  };

  const set = (admin: AdminState) => async (req: FastifyRequest<{ Params: BackendParams }>, reply: FastifyReply) => {
    const found = find(req, reply);
    if (found === null) return reply;
    found.backend.setAdmin(admin, 'admin', req.ip);
    return answer(found.pool, found.backend);
  };
  app.post('/api/v1/pools/:pool/backends/:backend/drain', set('draining'));
  app.post('/api/v1/pools/:pool/backends/:backend/disable', set('disabled'));
  app.post('/api/v1/pools/:pool/backends/:backend/enable', set('enabled'));

  // Body {"weight": N} (0 to 1000; 0 takes no new requests, as a drain) or {"weight": null}
  // (back to the configured weight).
  app.post('/api/v1/pools/:pool/backends/:backend/weight', async (req: FastifyRequest<{ Params: BackendParams; Body: unknown }>, reply) => {
    const found = find(req, reply);
    if (found === null) return reply;
    const body = (typeof req.body === 'object' && req.body !== null ? req.body : {}) as Record<string, unknown>;
    const w = body.weight;
    if (!(w === null || (Number.isSafeInteger(w) && (w as number) >= 0 && (w as number) <= MAX_WEIGHT))) {
      return sendError(reply, errors.ADMIN_BAD_REQUEST, `weight must be a whole number from 0 to ${MAX_WEIGHT}, or null for the configured weight (got ${JSON.stringify(w) ?? 'nothing'})`);
    }
    const { backend } = found;
    // The configured weight given back explicitly is the same as null.
    backend.setRuntimeWeight(w === null || w === backend.config.weight ? null : (w as number), 'admin', ramping(backend), req.ip);
    return weightAnswer(found.pool, backend);
  });
}
