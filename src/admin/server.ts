// The admin server: a fastify app on its own (by default loopback) address with the
// probes, /metrics, the JSON API, the event stream and the status page. Mutating calls
// need the bearer token; with `authReads`, reads do too (except the probes and the
// page's static files, which carry no data).

import Fastify from 'fastify';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { errors, TandemError } from '../errors.ts';
import { isLoopback } from './auth.ts';
import { AdminGuard } from './guard.ts';
import { authenticated, sendError } from './context.ts';
import type { AdminContext } from './context.ts';
import { EventStream } from './event-stream.ts';
import type { EventStreamOptions } from './event-stream.ts';
import type { Metrics } from './metrics.ts';
import { backendRoutes } from './routes/backends.ts';
import { eventRoutes } from './routes/events.ts';
import { healthRoutes } from './routes/health.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { reloadRoutes } from './routes/reload.ts';
import { loadStatusPage, STATUS_PAGE_PATHS, statusPageRoutes } from './routes/status-page.ts';
import { statusRoutes } from './routes/status.ts';
import { vipRoutes } from './routes/vips.ts';
import type { AdminRuntime } from './runtime.ts';

export interface AdminOptions {
  host: string;
  port: number;
  token: string | null;
  /** Reads need the token too. */
  authReads: boolean;
  /** Event stream tuning; defaults suit production. */
  events?: EventStreamOptions;
}

export interface AdminServer {
  /** `host:port` as bound (IPv6 in brackets), like ListenerView.address. */
  readonly address: string;
  /** Ends event streams, then stops the server. */
  close(): Promise<void>;
}

const OPEN_PATHS = new Set<string>(['/healthz', '/readyz', ...STATUS_PAGE_PATHS]);

/** Starts the admin server; refuses a non-loopback address without a token. */
export async function startAdmin(runtime: AdminRuntime, metrics: Metrics, opts: AdminOptions): Promise<AdminServer> {
  if (opts.token === null && !isLoopback(opts.host)) {
    throw new TandemError(errors.CONFIG_INVALID,
      `admin address ${opts.host} is reachable from other machines; set admin.token or bind the admin API to 127.0.0.1`);
  }
  if (opts.token === '') throw new TandemError(errors.CONFIG_INVALID, 'admin.token is empty');
  const assets = await loadStatusPage();
  metrics.observe(runtime);
  const events = new EventStream(runtime, opts.events);
  const ctx: AdminContext = { runtime, metrics, events };
  const guard = new AdminGuard(opts);

  const app = Fastify({ logger: false, return503OnClosing: true });
  // A change without a body still says application/json (see guard.ts): accept it empty.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, body === '' ? {} : JSON.parse(body as string));
    } catch (err) {
      (err as { statusCode?: number }).statusCode = 400;
      done(err as Error, undefined);
    }
  });

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const verdict = guard.check(req, OPEN_PATHS.has(req.routeOptions.url ?? ''));
    if (verdict.ok) {
      authenticated.set(req.raw, verdict.authenticated);
      return;
    }
    if (verdict.error === errors.ADMIN_UNAUTHORIZED) reply.header('www-authenticate', 'Bearer realm="tandem"');
    if (verdict.retryAfter !== undefined) reply.header('retry-after', String(verdict.retryAfter));
    return sendError(reply, verdict.error);
  });

  app.setNotFoundHandler((req, reply) => sendError(reply, errors.ADMIN_NOT_FOUND, `no ${req.method} ${req.url.split('?')[0]}`));
  app.setErrorHandler((err: FastifyError | TandemError, _req, reply) => {
    if (err instanceof TandemError) return reply.code(err.status > 0 ? err.status : 500).send({ code: err.code, message: err.message });
    const status = typeof err.statusCode === 'number' && err.statusCode >= 400 ? err.statusCode : 500;
    return reply.code(status).send({ code: err.code ?? 'TANDEM_ERR_INTERNAL', message: err.message });
  });

  // Streams never end by themselves; end them before fastify waits for open requests.
  app.addHook('preClose', async () => events.close());

  healthRoutes(app, ctx);
  metricsRoutes(app, ctx);
  statusRoutes(app, ctx);
  backendRoutes(app, ctx);
  reloadRoutes(app, ctx);
  vipRoutes(app, ctx);
  eventRoutes(app, ctx);
  statusPageRoutes(app, assets);

  try {
    await app.listen({ host: opts.host, port: opts.port });
  } catch (cause) {
    events.close();
    await app.close();
    throw new TandemError(errors.LISTEN, `admin ${opts.host}:${opts.port}`, { cause });
  }
  const bound = app.server.address();
  const address = typeof bound === 'object' && bound !== null
    ? `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`
    : String(bound);
  return {
    address,
    close: () => app.close(),
  };
}
