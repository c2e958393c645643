// Operator control of single backends: drain (no new requests, in-flight ones finish),
// disable (drain, and health checks cannot bring it back), enable (undo both).

import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AdminState } from '../../pool/backend.ts';
import { errors } from '../../errors.ts';
import { sendError } from '../context.ts';
import type { AdminContext } from '../context.ts';

interface BackendParams { pool: string; backend: string }

export function backendRoutes(app: FastifyInstance, ctx: AdminContext): void {
  const set = (admin: AdminState) => async (req: FastifyRequest<{ Params: BackendParams }>, reply: FastifyReply) => {
    const { pool: poolName, backend: backendName } = req.params;
    const pool = ctx.runtime.pools().get(poolName);
    const backend = pool?.byName.get(backendName);
    if (pool === undefined || backend === undefined) {
      return sendError(reply, errors.ADMIN_NOT_FOUND, pool === undefined ? `pool ${poolName}` : `backend ${backendName} in pool ${poolName}`);
    }
    backend.setAdmin(admin, 'admin', req.ip);
    return { pool: pool.name, backend: backend.name, admin: backend.admin, state: backend.state() };
  };
  app.post('/api/v1/pools/:pool/backends/:backend/drain', set('draining'));
  app.post('/api/v1/pools/:pool/backends/:backend/disable', set('disabled'));
  app.post('/api/v1/pools/:pool/backends/:backend/enable', set('enabled'));
}
