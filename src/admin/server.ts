// The admin server: a fastify app on its own (by default loopback) address with the
// probes, /metrics, the JSON API, the event stream and the status page. Mutating calls
// need the bearer token; with `authReads`, reads do too (except the probes and the
// page's static files, which carry no data).
//
// A reload applies the admin section here (prepare, then commit or abort, like the
// data planes' listeners): a new token or authReads takes effect at once, and a new
// address is bound by a second app before the first one closes.

import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerResponse } from 'node:http';
import { errors, TandemError } from '../errors.ts';
import { log as rootLog, type Logger } from '../log.ts';
import { isLoopback } from './auth.ts';
import { AdminGuard } from './guard.ts';
import { authenticated, sendError } from './context.ts';
import type { AdminContext } from './context.ts';
import { fastifyError, MethodTable } from './errors.ts';
import { EventStream } from './event-stream.ts';
import type { EventStreamOptions } from './event-stream.ts';
import type { Metrics } from './metrics.ts';
import { backendRoutes } from './routes/backends.ts';
import { eventRoutes } from './routes/events.ts';
import { healthRoutes } from './routes/health.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { reloadRoutes } from './routes/reload.ts';
import { loadStatusPage, STATUS_PAGE_PATHS, statusPageRoutes } from './routes/status-page.ts';
import type { StatusPageAssets } from './routes/status-page.ts';
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

/** A reload's admin section, prepared: commit() applies it, abort() lets go of what prepare bound. */
export interface PreparedAdmin {
  /** The new address when prepare bound one, else null. */
  readonly address: string | null;
  /** What commit() changes, by key: `token`, `authReads`, `address` (values never). */
  readonly changes: readonly string[];
  commit(): void;
  abort(): Promise<void>;
}

export interface AdminServer {
  /** `host:port` as bound (IPv6 in brackets), like ListenerView.address; follows a rebind. */
  readonly address: string;
  /** Ends event streams, then stops the server. */
  close(): Promise<void>;
}

/** The admin server a control plane runs: one whose section a reload can change. */
export interface ReloadableAdmin extends AdminServer {
  /**
   * Checks and binds a reloaded admin section without applying it: a new address is
   * bound now (TandemError LISTEN when it cannot be), the token and authReads change at
   * commit. Throws TandemError CONFIG_INVALID for a section startAdmin would refuse.
   */
  prepare(opts: AdminOptions): Promise<PreparedAdmin>;
}

const OPEN_PATHS = new Set<string>(['/healthz', '/readyz', ...STATUS_PAGE_PATHS]);

/** One bound fastify app and the event streams it carries. */
interface BoundApp {
  readonly app: FastifyInstance;
  readonly address: string;
  readonly streams: Set<ServerResponse>;
  /** Set once the app is closing: new requests get 503 and Connection: close. */
  closing: boolean;
}

/** Starts the admin server; refuses a non-loopback address without a token. */
export async function startAdmin(runtime: AdminRuntime, metrics: Metrics, opts: AdminOptions): Promise<ReloadableAdmin> {
  checkOptions(opts);
  const assets = await loadStatusPage();
  metrics.observe(runtime);
  const events = new EventStream(runtime, opts.events);
  const ctx: AdminContext = { runtime, metrics, events };
  const guard = new AdminGuard(opts);
  let running: AdminOptions = opts;
  let current: BoundApp;
  try {
    current = await bind(ctx, guard, assets, opts);
  } catch (err) {
    events.close();
    throw err;
  }

  return {
    get address() {
      return current.address;
    },
    async prepare(next: AdminOptions): Promise<PreparedAdmin> {
      checkOptions(next);
      const moves = next.host !== running.host || next.port !== running.port;
      // Bound now, beside the running app: if the address is taken the reload is refused
      // and the running app never stopped serving.
      const fresh = moves ? await bind(ctx, guard, assets, next) : null;
      const changes = [
        ...(next.token !== running.token ? ['token'] : []),
        ...(next.authReads !== running.authReads ? ['authReads'] : []),
        ...(moves ? ['address'] : []),
      ];
      let done = false;
      return {
        address: fresh?.address ?? null,
        changes,
        commit() {
          if (done) return;
          done = true;
          const credentials = next.token !== running.token || next.authReads !== running.authReads;
          guard.update(next);
          running = next;
          // Streams opened under the old credentials end: their clients reconnect (with
          // Last-Event-ID, so they miss nothing) and are checked against the new ones.
          if (credentials) events.endClients();
          if (fresh !== null) {
            const old = current;
            current = fresh;
            // The reload call itself may be in flight on the old app: it is answered first.
            void retire(old);
          }
        },
        async abort() {
          if (done) return;
          done = true;
          if (fresh !== null) await retire(fresh);
        },
      };
    },
    async close() {
      // Streams never end by themselves: end them before fastify waits for open requests.
      events.close();
      await retire(current);
    },
  };
}

function checkOptions(opts: AdminOptions): void {
  if (opts.token === null && !isLoopback(opts.host)) {
    throw new TandemError(errors.CONFIG_INVALID,
      `admin address ${opts.host} is reachable from other machines; set admin.token or bind the admin API to 127.0.0.1`);
  }
  if (opts.token === '') throw new TandemError(errors.CONFIG_INVALID, 'admin.token is empty');
}

/** Builds an app with every route and binds it to `opts`' address. */
async function bind(ctx: AdminContext, guard: AdminGuard, assets: StatusPageAssets, opts: AdminOptions): Promise<BoundApp> {
  const log = opts.log ?? rootLog.child({ component: 'admin' });
  // fastify logs through the one logger; requests get the `admin` line below instead of
  // fastify's two lines per request. return503OnClosing is done in onRequest below, so
  // that its answer has tandem's shape.
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: false,
  });
  const bound: BoundApp = { app, address: '', streams: new Set(), closing: false };
  const methods = new MethodTable();
  app.addHook('onRoute', (route) => methods.add(route.method, route.url));

  // A change without a body still says application/json (see guard.ts): accept it empty.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, body === '' ? {} : JSON.parse(body as string));
    } catch (err) {
      done(new TandemError(errors.ADMIN_BAD_REQUEST, `the body is not valid JSON (${(err as Error).message})`), undefined);
    }
  });

  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    if (bound.closing) {
      reply.header('connection', 'close');
      return sendError(reply, errors.ADMIN_SHUTTING_DOWN);
    }
    const verdict = guard.check(req, OPEN_PATHS.has(req.routeOptions.url ?? ''));
    if (verdict.ok) {
      authenticated.set(req.raw, verdict.authenticated);
      return;
    }
    if (verdict.error === errors.ADMIN_UNAUTHORIZED) reply.header('www-authenticate', 'Bearer realm="tandem"');
    if (verdict.retryAfter !== undefined) reply.header('retry-after', String(verdict.retryAfter));
    return sendError(reply, verdict.error);
  });

  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split('?')[0];
    const allowed = methods.allowed(path);
    if (allowed.length > 0) {
      reply.header('allow', allowed.join(', '));
      return sendError(reply, errors.ADMIN_METHOD_NOT_ALLOWED, `${req.method} ${path} (it takes ${allowed.join(', ')})`);
    }
    return sendError(reply, errors.ADMIN_NOT_FOUND, `no ${req.method} ${path}`);
  });
  app.setErrorHandler((err: Error, _req, reply) => {
    const { spec, detail } = fastifyError(err);
    return sendError(reply, spec, detail);
  });

  app.addHook('onResponse', async (req: FastifyRequest, reply: FastifyReply) => logRequest(log, req, reply));

  healthRoutes(app, ctx);
  metricsRoutes(app, ctx);
  statusRoutes(app, ctx);
  backendRoutes(app, ctx);
  reloadRoutes(app, ctx);
  vipRoutes(app, ctx);
  eventRoutes(app, ctx, bound.streams);
  statusPageRoutes(app, assets);

  try {
    await app.listen({ host: opts.host, port: opts.port, listenTextResolver: (address) => `admin API listening on ${address}` });
  } catch (cause) {
    await app.close();
    throw new TandemError(errors.LISTEN, `admin ${opts.host}:${opts.port}: ${(cause as Error).message}`, { cause });
  }
  const a = app.server.address();
  const address = typeof a === 'object' && a !== null ? `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : String(a);
  return Object.assign(bound, { address });
}

/** Stops an app: its event streams end, requests in flight are answered, then it closes. */
async function retire(bound: BoundApp): Promise<void> {
  bound.closing = true;
  for (const res of bound.streams) res.end();
  bound.streams.clear();
  await bound.app.close();
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
