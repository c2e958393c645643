// POST /api/v1/vips/:vip/release: give up a held VIP (the peer takes it), e.g. before
// maintenance. POST /api/v1/vips/:vip/hook: the vip-agent sidecar reports a hook run it
// made, which a proxy with `ha.agent: true` waits for before it confirms a lease.

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

  app.post('/api/v1/vips/:vip/hook', async (req: FastifyRequest<{ Params: { vip: string }; Body: unknown }>, reply) => {
    const { vip } = req.params;
    if (!ctx.runtime.vips().some((v) => v.name === vip)) return sendError(reply, errors.ADMIN_NOT_FOUND, `VIP ${vip}`);
    const report = hookReport(req.body);
    if (typeof report === 'string') return sendError(reply, errors.ADMIN_BAD_REQUEST, report);
    ctx.runtime.bus.publish({ type: 'hook', vip, ...report });
    return { vip, recorded: true };
  });
}

const STATES = new Set(['MASTER', 'BACKUP', 'FAULT', 'STOP']);

/** The body of a hook report, or what is wrong with it. */
function hookReport(body: unknown): { state: 'MASTER' | 'BACKUP' | 'FAULT' | 'STOP'; epoch: number; outcome: 'ok' | 'failed'; ms: number } | string {
  const b = (typeof body === 'object' && body !== null ? body : {}) as Record<string, unknown>;
  if (typeof b.state !== 'string' || !STATES.has(b.state)) return 'state must be MASTER, BACKUP, FAULT or STOP';
  if (!Number.isSafeInteger(b.epoch) || (b.epoch as number) < 0) return 'epoch must be a whole number >= 0';
  if (b.outcome !== 'ok' && b.outcome !== 'failed') return 'outcome must be ok or failed';
  const ms = typeof b.ms === 'number' && Number.isFinite(b.ms) && b.ms >= 0 ? Math.round(b.ms) : 0;
  return { state: b.state as 'MASTER', epoch: b.epoch as number, outcome: b.outcome, ms };
}
