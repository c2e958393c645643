// GET /api/v1/status: one JSON document with everything the status page shows.

import type { FastifyInstance } from 'fastify';
import type { Backend } from '../../pool/backend.ts';
import type { Pool } from '../../pool/pool.ts';
import type { RouteConfig } from '../../config/types.ts';
import type { AdminContext } from '../context.ts';
import type { AdminRuntime } from '../runtime.ts';
import { authenticated } from '../context.ts';

/** The status document of the running instance. */
export function statusView(runtime: AdminRuntime, showConfigPath: boolean) {
  const config = runtime.config();
  return {
    node: runtime.node,
    time: Date.now(),
    // Where the config lives (and so the layout of the machine) is for token holders.
    configFile: showConfigPath ? config.file : null,
    listeners: runtime.listeners(),
    routes: config.routes.map(routeView),
    pools: Array.from(runtime.pools().values(), poolView),
    vips: runtime.vips(),
  };
}

function routeView(r: RouteConfig) {
  return {
    name: r.name,
    listeners: r.listeners,
    pool: r.pool,
    match: {
      hosts: [...r.match.hosts, ...r.match.hostSuffixes.map((s) => `*${s}`)],
      pathPrefix: r.match.pathPrefix,
      methods: r.match.methods,
      headers: r.match.headers,
    },
  };
}

function poolView(pool: Pool) {
  const checked = pool.config.healthCheck !== null;
  return {
    name: pool.name,
    balance: pool.config.balance,
    available: pool.hasAvailable(),
    /** Active health checks run: without them `up` only means nothing took the backend out. */
    healthChecks: checked,
    active: pool.active(),
    backends: pool.backends.map((b) => backendView(b, checked)),
  };
}

/** A share of failed requests at or above this, over the recent window, shows a backend as failing. */
export const FAILING_RATIO = 0.5;
/** ...once at least this many requests finished in the window. */
export const FAILING_MIN_REQUESTS = 3;

/**
 * The state to show an operator. `state` says what took a backend out (health checks,
 * outlier detection, an operator); an `up` backend whose recent requests mostly fail
 * (transport errors: refused, reset, timed out) shows as `failing` instead, and one
 * that no active check looks at shows as `unchecked` (as HAProxy shows "no check"),
 * not as a verified, green `up`.
 */
export function shownState(b: Backend, checked: boolean): string {
  const state = b.state();
  if (state !== 'up') return state;
  const r = b.recent();
  if (r.requests >= FAILING_MIN_REQUESTS && r.failures / r.requests >= FAILING_RATIO) return 'failing';
  return checked ? 'up' : 'unchecked';
}

function backendView(b: Backend, checked: boolean) {
  const recent = b.recent();
  return {
    name: b.name,
    url: b.config.origin,
    backup: b.config.backup,
    state: b.state(),
    shown: shownState(b, checked),
    /** Since when (ms since the epoch) `state` is what it is. */
    stateSince: b.stateSince,
    /** Time spent unhealthy or ejected since tandem started (or the backend was added). */
    downtimeMs: b.downtime(),
    admin: b.admin,
    healthy: b.healthy,
    ejected: b.ejected,
    weight: b.config.weight,
    /** An operator's weight until the next reload; null: the configured one. */
    runtimeWeight: b.runtimeWeight,
    effectiveWeight: b.effectiveWeight,
    active: b.active,
    requests: b.requests,
    failures: b.failures,
    /** Requests finished and failed in about the last 30 s. */
    recentRequests: recent.requests,
    recentFailures: recent.failures,
    checksOk: b.checksOk,
    checksFailed: b.checksFailed,
    lastCheck: b.lastCheck,
  };
}

export function statusRoutes(app: FastifyInstance, ctx: AdminContext): void {
  app.get('/api/v1/status', async (req) => {
    // Active requests are counted in the workers; without this the view is up to a push
    // interval old, and a drain would show no request in flight that still is.
    if (ctx.runtime.gather !== undefined) await ctx.runtime.gather();
    return statusView(ctx.runtime, authenticated.get(req.raw) === true);
  });
}
