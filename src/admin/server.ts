// The admin server: a fastify app on its own (by default loopback) address with the
// probes, /metrics, the JSON API, the event stream and the status page. Mutating calls
// need the bearer token; with `authReads`, reads do too (except the probes and the
// page's static files, which carry no data).

import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { errors, TandemError } from '../errors.ts';
import { log as rootLog, type Logger } from '../log.ts';
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
  /** fastify's logger and the admin lines; default: the process's logger. */
  log?: Logger;
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

  const log = opts.log ?? rootLog.child({ component: 'admin' });
  // fastify logs through the one logger; requests get the `admin` line below instead of
  // fastify's two lines per request.
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
  });
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

  app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => logRequest(log, req, reply));

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
    await app.listen({ host: opts.host, port: opts.port, listenTextResolver: (address) => `admin API listening on ${address}` });
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

/**
 * One line per admin request: every change (drain, disable, enable, release, reload...)
 * at info with who asked and what came of it, refusals at warn, and reads (and the
 * vip-agent's hook reports) at debug only, since scrapes and the status page poll.
 */
function logRequest(log: Logger, req: FastifyRequest, reply: FastifyReply): void {
  const status = reply.statusCode;
  const route = req.routeOptions.url;
  const change = req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'OPTIONS';
  const action = change && route !== undefined ? (route.split('/').at(-1) ?? req.method) : req.method;
  const params = (req.params ?? {}) as Record<string, string>;
  const target = params.backend !== undefined ? `${params.pool}/${params.backend}` : (params.vip ?? params.pool ?? null);
  const fields = {
    event: 'admin', client: req.ip, method: req.method, path: req.url.split('?')[0], action, target, status,
    durationMs: Math.round(reply.elapsedTime),
  };
  const msg = `admin ${action}${target === null ? '' : ` ${target}`} by ${req.ip}: ${status}`;
  if (status >= 400 && (change || status === 401 || status === 403 || status === 429)) log.warn(fields, msg);
  else if (change && action !== 'hook') log.info(fields, msg);
  else log.debug(fields, msg);
}
