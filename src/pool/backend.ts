import { upstreamTls } from './tls.ts';
import { Pool as UndiciPool } from './undici.ts';
import type { BackendConfig, PoolConfig } from '../config/types.ts';
import type { BackendState, CheckSummary } from '../events.ts';

export type AdminState = 'enabled' | 'draining' | 'disabled';

export interface CheckResult {
  /** Wall-clock time of the check, ms since the epoch. */
  readonly time: number;
  readonly ok: boolean;
  readonly latencyMs: number;
  readonly detail: string;
  /** The HTTP status the backend answered; null when it did not (refused, timed out...). */
  readonly status?: number | null;
}

/** What a change of a backend came with, besides its reason. */
export interface ChangeCause {
  /** The state before the change. */
  readonly previous: BackendState;
  /** The active health check that made it. */
  readonly check?: CheckSummary;
  /** The admin API client that made it. */
  readonly actor?: string;
}

export type BackendChangeListener = (backend: Backend, reason: string, cause?: ChangeCause) => void;

/**
 * One backend of a pool: its upstream connections and the state every part of tandem
 * reads. Counters are plain integers on the object, read by the metrics at scrape time,
 * so that the hot path never hashes labels.
 */
export class Backend {
  readonly name: string;
  readonly pool: string;
  /** Replaced on reload when the upstream can be kept (weight or backup flag changed). */
  config: BackendConfig;
  readonly upstream: UndiciPool;
  /** `host:port` as a Host header names this backend (port left out when it is the default). */
  readonly hostHeader: string;
  /** The pool settings the upstream was made with. */
  readonly poolConfig: PoolConfig;
  /** Its index in its pool's backends (set by the pool that holds it now). */
  slot: number;
  /** Verdict of active health checks. */
  healthy: boolean;
  /** Taken out by passive outlier detection. */
  ejected: boolean;
  admin: AdminState;
  /** Weight the balancer uses now: the configured weight, ramped during slow start. */
  effectiveWeight: number;
  /** Proxied requests in flight. */
  active: number;
  /** Proxied requests finished, and those that failed at the transport level (for metrics). */
  requests: number;
  failures: number;
  /** Consecutive failed proxied requests, for passive health. */
  consecutiveFailures: number;
  lastCheck: CheckResult | null;
  /** Active health checks that passed and that failed, for `tandem_health_checks_total`. */
  checksOk: number;
  checksFailed: number;
  /** Called by the owner on every change of availability or effective weight. */
  onChange: BackendChangeListener;

  constructor(pool: PoolConfig, config: BackendConfig, onChange: BackendChangeListener) {
    this.name = config.name;
    this.pool = pool.name;
    this.config = config;
    this.poolConfig = pool;
    const defaultPort = config.protocol === 'https:' ? 443 : 80;
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    this.hostHeader = config.port === defaultPort ? host : `${host}:${config.port}`;
    this.upstream = new UndiciPool(config.origin, {
      connections: config.maxConnections,
      connectTimeout: pool.connectTimeout,
      headersTimeout: pool.responseTimeout,
      bodyTimeout: pool.idleTimeout,
      keepAliveTimeout: Math.min(pool.idleTimeout, 4000),
      keepAliveMaxTimeout: pool.idleTimeout,
      // Pipelining would let one slow response hold others back; a proxy wants 1.
      pipelining: 1,
      ...upstreamTls(config, pool.tls ?? null, pool.connectTimeout),
    });
    this.slot = 0;
    this.healthy = !(pool.healthCheck?.startUnhealthy ?? false);
    this.ejected = false;
    this.admin = 'enabled';
    this.effectiveWeight = config.weight;
    this.active = 0;
    this.requests = 0;
    this.failures = 0;
    this.consecutiveFailures = 0;
    this.lastCheck = null;
    this.checksOk = 0;
    this.checksFailed = 0;
    this.onChange = onChange;
  }

  /** The one availability check every balancer and policy uses. */
  isAvailable(): boolean {
    return this.admin === 'enabled' && this.healthy && !this.ejected && this.effectiveWeight > 0;
  }

  /** State as operators see it; admin states win over health states. */
  state(): BackendState {
    if (this.admin === 'disabled') return 'disabled';
    if (this.admin === 'draining') return 'draining';
    if (!this.healthy) return 'down';
    if (this.ejected) return 'ejected';
    return 'up';
  }

  /** `check`: the active health check whose result this is. */
  setHealthy(healthy: boolean, reason: string, check?: CheckSummary): void {
    if (this.healthy === healthy) return;
    const previous = this.state();
    this.healthy = healthy;
    this.onChange(this, reason, check === undefined ? { previous } : { previous, check });
  }

  setEjected(ejected: boolean, reason: string): void {
    if (this.ejected === ejected) return;
    const previous = this.state();
    this.ejected = ejected;
    this.onChange(this, reason, { previous });
  }

  /** `actor`: who asked (the admin API client's address). */
  setAdmin(admin: AdminState, reason: string, actor?: string): void {
    if (this.admin === admin) return;
    const previous = this.state();
    this.admin = admin;
    this.onChange(this, reason, actor === undefined ? { previous } : { previous, actor });
  }

  setEffectiveWeight(weight: number, reason: string): void {
    if (this.effectiveWeight === weight) return;
    const previous = this.state();
    this.effectiveWeight = weight;
    this.onChange(this, reason, { previous });
  }

  close(): Promise<void> {
    return this.upstream.close();
  }

  destroy(): Promise<void> {
    return this.upstream.destroy();
  }
}
