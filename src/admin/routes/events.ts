// GET /api/v1/events: the server-sent event stream (see ../event-stream.ts).

import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { AdminContext } from '../context.ts';

/** `streams`: the app's open streams, which end when the app closes or moves. */
export function eventRoutes(app: FastifyInstance, ctx: AdminContext, streams: Set<ServerResponse>): void {
  app.get('/api/v1/events', { exposeHeadRoute: false }, (req: FastifyRequest<{ Querystring: { lastEventId?: string } }>, reply) => {
    // EventSource resends the header by itself; the query form is for clients that
    // cannot set headers on their first connection.
    const header = req.headers['last-event-id'];
    const last = typeof header === 'string' ? header.trim() : req.query.lastEventId;
    reply.hijack();
    const res = reply.raw;
    streams.add(res);
    res.once('close', () => streams.delete(res));
    ctx.events.attach(req.raw, res, last);
  });
}
