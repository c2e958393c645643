// Prometheus scrape endpoint.

import type { FastifyInstance } from 'fastify';
import type { AdminContext } from '../context.ts';

export function metricsRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get('/metrics', async (_req, reply) => {
    const { registry } = ctx.metrics;
    const text = await registry.metrics();
    return reply.header('content-type', registry.contentType).send(text);
  });
}
