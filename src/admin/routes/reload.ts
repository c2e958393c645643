// POST /api/v1/reload: the same as SIGHUP. On failure the old config keeps running and
// the answer lists the problems as FILE:LINE:COL lines.

import type { FastifyInstance } from 'fastify';
import { errors } from '../../errors.ts';
import { sendError } from '../context.ts';
import type { AdminContext } from '../context.ts';

export function reloadRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.post('/api/v1/reload', async (req, reply) => {
    const outcome = await ctx.runtime.reload({ source: 'api', client: req.ip });
    if (!outcome.ok) return sendError(reply, errors.RELOAD_FAILED, undefined, { errors: outcome.errors });
    return { ok: true, errors: [] };
  });
}
