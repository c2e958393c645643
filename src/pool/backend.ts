import type buildConnectorType from 'undici/lib/core/connect.js';
import { headerConnector, type ProxyVersion } from './proxy-header.ts';
import { skippingContinue } from './interim.ts';
import { upstreamTls, upstreamTlsKey } from './tls.ts';
import { buildConnector, Pool as UndiciPool } from './undici.ts';
import { FastUpstream } from '../engine/upstream.ts';

/** What requests to a backend are dispatched to: undici's pool (node engine) or the fast engine's. */
export type Upstream = UndiciPool | FastUpstream;
import type { BackendConfig, PoolConfig } from '../config/types.ts';
import type { BackendState, CheckSummary } from '../events.ts';
import { BUCKET_SLOTS, bucketOf } from '../histogram.ts';

export type AdminState = 'enabled' | 'draining' | 'disabled';

/** Every state a backend can be in, as `tandem_backend_state` lists them. */
export const BACKEND_STATES: readonly BackendState[] = Object.freeze(['up', 'down', 'ejected', 'draining', 'disabled']);

/**
 * What the metrics count of one backend over its life: state changes, ejections, time
 * spent down and health check durations. Changes are rare (never per request), so plain
 * fields do. A reload hands the record to the Backend that replaces one of the same pool
 * and name, so these counters never go back.
 */
export class BackendRecord {
  /** Changes of state(), by the state entered. */
  readonly transitions: Map<BackendState, number>;
  /** Times outlier detection took the backend out (the `ejected` flag rose). */
  ejections: number;
  /** Milliseconds of finished periods in which the backend was down or ejected. */
  downMs: number;
  /** performance.now() when the current such period began; -1 while it is up. */
  downSince: number;
  /** The state last seen. */
  state: BackendState;
  /** Wall-clock time (ms since the epoch) `state` was entered, for the status. */
  since: number;
  /** Active health check durations: non-cumulative bucket counts (+Inf last) and their sum in seconds; null until the first check. */
  checkBuckets: Float64Array | null;
  checkSum: number;

  constructor(b: Backend) {
    this.transitions = new Map();
    this.ejections = 0;
    this.downMs = 0;
    this.state = b.state();
    this.since = Date.now();
    this.downSince = b.healthy && !b.ejected ? -1 : performance.now();
    this.checkBuckets = null;
    this.checkSum = 0;
  }

  /** Notes `b`'s state now; called after every change of health, ejection or admin state. */
  follow(b: Backend): void {
    const state = b.state();
    if (state !== this.state) {
      this.state = state;
      this.since = Date.now();
      this.transitions.set(state, (this.transitions.get(state) ?? 0) + 1);
    }
    const down = !b.healthy || b.ejected;
    if (down && this.downSince < 0) this.downSince = performance.now();
    else if (!down && this.downSince >= 0) {
      this.downMs += performance.now() - this.downSince;
      this.downSince = -1;
    }
  }

  /** Seconds the backend has been down or ejected, the current period included. */
  downSeconds(): number {
    return (this.downMs + (this.downSince < 0 ? 0 : performance.now() - this.downSince)) / 1000;
  }

  /** Counts one active health check that took `seconds` (passed or not). */
  check(seconds: number): void {
    this.checkBuckets ??= new Float64Array(BUCKET_SLOTS);
    this.checkBuckets[bucketOf(seconds)]++;
    this.checkSum += seconds;
  }
}

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
  /** The weight an operator set (reason `admin`) or a reload took back. */
  readonly weight?: number;
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
  /** The upstream's TLS settings and files, as upstreamTlsKey() gives them. */
  readonly tlsKey: string;
  /** The PROXY protocol version every connection to it opens with; null: none, and `upstream` is shared by all clients. */
  readonly proxyVersion: ProxyVersion | null;
  /** Connection pools private to one client connection each (with proxyVersion), open now. */
  readonly privateUpstreams: Set<Upstream>;
  /** The fast engine's connections to it, made on its first request from a fast listener; null until then. */
  private fast: FastUpstream | null;
  private readonly connector: buildConnectorType.connector;
  private readonly connectWithHeader: ((header: Buffer) => buildConnectorType.connector) | null;
  /** Its index in its pool's backends (set by the pool that holds it now). */
  slot: number;
  /** Verdict of active health checks. */
  healthy: boolean;
  /** Taken out by passive outlier detection. */
  ejected: boolean;
  admin: AdminState;
  /** Weight the balancer uses now: the target weight, ramped during slow start. */
  effectiveWeight: number;
  /** An operator's weight (`POST .../weight`), kept until the next reload; null: the configured one. */
  runtimeWeight: number | null;
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
  /** State changes, ejections, downtime and check durations, for the metrics and the status. */
  record: BackendRecord;
  /** Samples of (time, requests, failures) for the recent error ratio, oldest first. */
  private readonly samples: { time: number; requests: number; failures: number }[];

  constructor(pool: PoolConfig, config: BackendConfig, onChange: BackendChangeListener) {
    this.name = config.name;
    this.pool = pool.name;
    this.config = config;
    this.poolConfig = pool;
    this.tlsKey = upstreamTlsKey(config, pool.tls ?? null);
    const defaultPort = config.protocol === 'https:' ? 443 : 80;
    const host = config.host.includes(':') ? `[${config.host}]` : config.host;
    this.hostHeader = config.port === defaultPort ? host : `${host}:${config.port}`;
    const connect = upstreamTls(config, pool.tls ?? null, pool.connectTimeout)?.connect ?? buildConnector({ timeout: pool.connectTimeout, allowH2: false });
    this.connector = connect;
    this.fast = null;
    this.upstream = new UndiciPool(config.origin, { ...upstreamOptions(pool, config), connect: skippingContinue(connect) });
    this.proxyVersion = pool.proxyProtocol ?? null;
    this.privateUpstreams = new Set();
    this.connectWithHeader = this.proxyVersion === null ? null : headerConnector(config, pool.tls ?? null, pool.connectTimeout);
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
    this.runtimeWeight = null;
    this.samples = [];
    this.record = new BackendRecord(this);
  }

  /** Takes over the record of the Backend this one replaces on reload; its state now counts as a change from the old one's. */
  adoptRecord(old: Backend): void {
    this.record = old.record;
    this.record.follow(this);
  }

  /** The weight slow start ramps to and the balancer ends at: the operator's, else the configured one. */
  get targetWeight(): number {
    return this.runtimeWeight ?? this.config.weight;
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
    this.record.follow(this);
    this.onChange(this, reason, check === undefined ? { previous } : { previous, check });
  }

  setEjected(ejected: boolean, reason: string): void {
    if (this.ejected === ejected) return;
    const previous = this.state();
    this.ejected = ejected;
    if (ejected) this.record.ejections++;
    this.record.follow(this);
    this.onChange(this, reason, { previous });
  }

  /** `actor`: who asked (the admin API client's address). */
  setAdmin(admin: AdminState, reason: string, actor?: string): void {
    if (this.admin === admin) return;
    const previous = this.state();
    this.admin = admin;
    this.record.follow(this);
    this.onChange(this, reason, actor === undefined ? { previous } : { previous, actor });
  }

  /** Wall-clock time (ms since the epoch) state() last changed, or the backend was first made. */
  get stateSince(): number {
    return this.record.since;
  }

  /** Health downtime so far, in ms: time spent unhealthy or ejected, the current spell included. */
  downtime(): number {
    return Math.round(this.record.downSeconds() * 1000);
  }

  /**
   * Records the request counts for the recent error ratio; the control plane calls it
   * as the data planes' sums come in (about once a second). Keeps `window` ms of samples.
   */
  sample(now: number, window: number): void {
    const last = this.samples.at(-1);
    // Counters that went back (the data planes' sums restarted) restart the window.
    if (last !== undefined && (this.requests < last.requests || this.failures < last.failures)) this.samples.length = 0;
    const newest = this.samples.at(-1);
    if (newest === undefined || now - newest.time >= window / 10) {
      this.samples.push({ time: now, requests: this.requests, failures: this.failures });
    }
    while (this.samples.length > 1 && now - this.samples[1].time >= window) this.samples.shift();
  }

  /** Requests finished and failed since the oldest sample kept (about the last `window` ms). */
  recent(): { requests: number; failures: number; since: number | null } {
    const first = this.samples[0];
    if (first === undefined) return { requests: 0, failures: 0, since: null };
    return { requests: this.requests - first.requests, failures: this.failures - first.failures, since: first.time };
  }

  setEffectiveWeight(weight: number, reason: string): void {
    if (this.effectiveWeight === weight) return;
    const previous = this.state();
    this.effectiveWeight = weight;
    this.onChange(this, reason, { previous });
  }

  /**
   * An operator's weight until the next reload (null: back to the configured one). The
   * effective weight follows at once, unless slow start is ramping it (`ramping`): the
   * ramp then ends at the new weight.
   */
  setRuntimeWeight(weight: number | null, reason: string, ramping = false, actor?: string): void {
    if (this.runtimeWeight === weight) return;
    this.runtimeWeight = weight;
    const target = this.targetWeight;
    if (!ramping || this.effectiveWeight > target) this.effectiveWeight = target;
    this.onChange(this, reason, { previous: this.state(), weight: target, ...(actor === undefined ? {} : { actor }) });
  }

  /**
   * A connection pool of its own for one client connection, whose connections open with
   * `header` (the PROXY protocol names one client per connection, so they are never
   * shared). Ended with dropPrivate() when that client connection closes.
   */
  openPrivate(header: Buffer, fast: boolean): Upstream {
    const connect = this.connectWithHeader!(header);
    const upstream = fast ? new FastUpstream(fastSettings(this.poolConfig, this.config, connect))
      : new UndiciPool(this.config.origin, { ...upstreamOptions(this.poolConfig, this.config), connect: skippingContinue(connect) });
    this.privateUpstreams.add(upstream);
    return upstream;
  }

  /** The fast engine's keep-alive connections to this backend (shared by every fast client connection). */
  fastUpstream(): FastUpstream {
    return this.fast ??= new FastUpstream(fastSettings(this.poolConfig, this.config, this.connector));
  }

  /** Closes a private pool: its client connection is gone, so its requests in flight are too. */
  dropPrivate(upstream: Upstream): void {
    if (!this.privateUpstreams.delete(upstream)) return;
    upstream.destroy().catch(() => {});
  }

  close(): Promise<void> {
    return Promise.all([this.upstream.close(), this.fast?.close(), ...[...this.privateUpstreams].map((u) => u.close())]).then(() => {});
  }

  destroy(): Promise<void> {
    return Promise.all([this.upstream.destroy(), this.fast?.destroy(), ...[...this.privateUpstreams].map((u) => u.destroy())]).then(() => {});
  }
}

/** The settings of every connection pool to a backend, shared or private. */
function upstreamOptions(pool: PoolConfig, config: BackendConfig) {
  return {
    connections: config.maxConnections,
    connectTimeout: pool.connectTimeout,
    headersTimeout: pool.responseTimeout,
    bodyTimeout: pool.idleTimeout,
    keepAliveTimeout: Math.min(pool.idleTimeout, 4000),
    keepAliveMaxTimeout: pool.idleTimeout,
    // Pipelining would let one slow response hold others back; a proxy wants 1.
    pipelining: 1,
  };
}

/** The same limits for the fast engine's connections (src/engine/upstream.ts). */
function fastSettings(pool: PoolConfig, config: BackendConfig, connect: buildConnectorType.connector) {
  return {
    connect,
    origin: new URL(config.origin),
    headersTimeout: pool.responseTimeout,
    bodyTimeout: pool.idleTimeout,
    keepAliveTimeout: Math.min(pool.idleTimeout, 4000),
  };
}
