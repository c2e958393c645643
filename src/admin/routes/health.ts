// Probes: /healthz says the process answers, /readyz says it can serve traffic now.

import type { FastifyInstance } from 'fastify';
import type { AdminContext } from '../context.ts';
import type { AdminRuntime } from '../runtime.ts';

/** Why the instance cannot serve yet; empty when it can. */
export function notReadyReasons(runtime: AdminRuntime): string[] {
  const reasons: string[] = [];
  for (const l of runtime.listeners()) if (!l.bound) reasons.push(`listener ${l.name} (${l.address}) is not bound`);
  for (const pool of runtime.pools().values()) if (!pool.hasAvailable()) reasons.push(`pool ${pool.name} has no available backend`);
  return reasons;
}

export function healthRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get('/healthz', async () => ({ status: 'alive' }));

  app.get('/readyz', async (_req, reply) => {
    const reasons = notReadyReasons(ctx.runtime);
    if (reasons.length > 0) return reply.code(503).send({ ready: false, reasons });
    return { ready: true, reasons };
  });
}
