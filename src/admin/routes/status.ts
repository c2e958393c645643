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
  return {
    name: pool.name,
    balance: pool.config.balance,
    available: pool.hasAvailable(),
    active: pool.active(),
    backends: pool.backends.map(backendView),
  };
}

function backendView(b: Backend) {
  return {
    name: b.name,
    url: b.config.origin,
    backup: b.config.backup,
    state: b.state(),
    admin: b.admin,
    healthy: b.healthy,
    ejected: b.ejected,
    weight: b.config.weight,
    effectiveWeight: b.effectiveWeight,
    active: b.active,
    requests: b.requests,
    failures: b.failures,
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
