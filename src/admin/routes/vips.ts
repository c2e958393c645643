// POST /api/v1/vips/:vip/release: give up a held VIP (the peer takes it), e.g. before
// maintenance.

import type { FastifyInstance, FastifyRequest } from 'fastify';
import { errors } from '../../errors.ts';
import { sendError } from '../context.ts';
import type { AdminContext } from '../context.ts';

export function vipRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.post('/api/v1/vips/:vip/release', async (req: FastifyRequest<{ Params: { vip: string } }>, reply) => {
    const { vip } = req.params;
    if (!(await ctx.runtime.releaseVip(vip))) return sendError(reply, errors.ADMIN_NOT_FOUND, `VIP ${vip}`);
    return { vip, released: true };
  });
}
