import { Compressor } from './compress.ts';
import type { Config, PoolConfig, RouteConfig } from '../config/types.ts';
import type { Backend } from '../pool/backend.ts';
import type { Pool } from '../pool/pool.ts';
import { RetryBudget } from '../pool/retry-budget.ts';
import { RouteActions } from './route-actions.ts';
import { BackendQueue } from './backend-queue.ts';
import { RateLimiter } from './rate-limit.ts';
import { Router } from './router.ts';
import type { RequestHandle } from './telemetry.ts';

/** Passive health as the forwarder feeds it; implemented in src/pool/health/passive.ts. */
export interface OutlierSink {
  onSuccess(backend: Backend): void;
  onFailure(backend: Backend, kind: 'connect' | 'reset' | 'timeout' | '5xx'): void;
}

/** Sticky sessions as the forwarder uses them; implemented in src/pool/sticky.ts. */
export interface StickyMap {
  lookup(cookieHeader: string | undefined): Backend | null;
  setCookie(backend: Backend, secure: boolean): string;
}

/** A pool as the data plane sees it: the pool and the per-request policies around it. */
export interface PoolRuntime {
  readonly name: string;
  readonly config: PoolConfig;
  readonly pool: Pool;
  readonly outlier: OutlierSink | null;
  readonly sticky: StickyMap | null;
  /** Host header to send; null: the client's own (or the backend's, see hostFromBackend). */
  readonly hostOverride: string | null;
  readonly hostFromBackend: boolean;
  activeRequests: number;
  /** Retries of failed attempts the pool may still make (retries of refused connections are free). */
  readonly retryBudget: RetryBudget;
  /**
   * Set once a reload replaced the pool: closes the connections of its backends that the
   * new config does not reuse. Called when its last request is done, since a request of
   * the old config may still retry on them.
   */
  retired: (() => Promise<void>) | null;
  /** Requests waiting for a backend with room. */
  readonly queue: BackendQueue;
}

export interface RouteRuntime {
  readonly config: RouteConfig;
  readonly name: string;
  readonly pool: PoolRuntime;
  /** Request handles of this generation, by listener index, then backend slot + 1 (0: none picked); filled by Telemetry. */
  readonly handles: RequestHandle[][];
  /** Redirect, rewrite, header rules and allow list; null when the route has none. */
  readonly actions: RouteActions | null;
  /** Per-client token buckets of the route's rateLimit; null: no limit. */
  readonly limiter: RateLimiter | null;
  /** Response compression; null: responses are relayed as they come. */
  readonly compress: Compressor | null;
}

/**
 * Everything the data plane reads for one config: built once per load or reload and
 * swapped in whole, so a request sees either the old config or the new, never a mix.
 */
export class Generation {
  readonly config: Config;
  readonly router: Router<RouteRuntime>;
  readonly pools: ReadonlyMap<string, PoolRuntime>;
  /** Indexed like config.routes. */
  readonly routes: readonly RouteRuntime[];

  constructor(config: Config, pools: ReadonlyMap<string, PoolRuntime>) {
    this.config = config;
    this.pools = pools;
    this.routes = config.routes.map((r) => ({ config: r, name: r.name, pool: pools.get(r.pool)!, actions: RouteActions.of(r),
      limiter: r.rateLimit === null ? null : new RateLimiter(r.rateLimit), compress: Compressor.of(r.compress), handles: [] }));
    this.router = new Router(config.routes, config.listeners.map((l) => l.name), this.routes);
  }
}

/** A request of `pool` is over: the last one of a pool a reload replaced closes its connections. */
export function requestDone(pool: PoolRuntime): void {
  if (pool.retired !== null && pool.activeRequests === 0 && pool.queue.length === 0) void pool.retired();
}

/** Builds the data plane's view of a pool. */
export function poolRuntime(pool: Pool, outlier: OutlierSink | null, sticky: StickyMap | null): PoolRuntime {
  const h = pool.config.hostHeader;
  return {
    name: pool.name,
    config: pool.config,
    pool,
    outlier,
    sticky,
    hostOverride: h === 'preserve' || h === 'backend' ? null : h,
    hostFromBackend: h === 'backend',
    activeRequests: 0,
    retryBudget: new RetryBudget(pool.config.retryBudgetPercent),
    retired: null,
    queue: new BackendQueue(),
  };
}
