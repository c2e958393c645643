import { createRequire } from 'node:module';
import type { Client } from 'undici';
import { headerConnector, localProxyHeader } from '../proxy-header.ts';
import { upstreamTls } from '../tls.ts';

// undici's full entry (its request API) is loaded when the first checker is made, not at
// import: data-plane workers import this module's siblings but never check, and the
// entry would cost each of them ~12 MB (see src/pool/undici.ts).
const require = createRequire(import.meta.url);
let ClientClass: typeof Client | null = null;
import type { HealthCheckConfig } from '../../config/types.ts';
import type { Backend } from '../backend.ts';
import type { Pool } from '../pool.ts';
import type { RecoveryListener } from '../slow-start.ts';

/** Bytes of a check's response body read at most; the rest is thrown away with its connection. */
export const CHECK_BODY_LIMIT = 8 * 1024;
/** Checks wander this share of the interval around it, so backends are not checked in lock step. */
const JITTER = 0.1;

/** Where a passed check reports, to end an ejection early. */
export interface Reinstater {
  /** `checkStarted` is the check's performance.now(): only ejections older than it end. */
  reinstate(backend: Backend, checkStarted: number): void;
}

export interface HealthCheckerOptions {
  /** Passive health of the same pool; a passed check un-ejects. */
  outlier?: Reinstater | null;
  /** Told when a backend comes up, for slow start. */
  recovery?: RecoveryListener | null;
}

/** Consecutive passed or failed checks. Kept beside the Backend so a reload keeps the streak. */
interface Streak {
  ok: number;
  failed: number;
}

const streaks = new WeakMap<Backend, Streak>();

/** One backend's check loop: its own connection, timer and at most one check in flight. */
interface Target {
  readonly backend: Backend;
  readonly client: Client;
  readonly headers: Record<string, string>;
  timer: NodeJS.Timeout | null;
  abort: AbortController | null;
}

/**
 * Active health checks of one pool. Each backend has its own loop and its own undici
 * Client (one keep-alive connection, apart from the traffic upstream, so a check
 * neither queues behind requests nor hides a full traffic pool). Loops never wait for
 * each other: a black-holed backend costs its own loop one timeout and no one else
 * anything. A check starts only after the previous one of the same backend ended.
 *
 * `rise` passes in a row bring a backend up and `fall` failures take it down; a passed
 * check also ends a passive ejection.
 */
export class HealthChecker {
  private readonly pool: Pool;
  private readonly config: HealthCheckConfig | null;
  private readonly outlier: Reinstater | null;
  private readonly recovery: RecoveryListener | null;
  private readonly targets: Target[] = [];
  private running = false;
  private stopped = false;

  constructor(pool: Pool, options: HealthCheckerOptions = {}) {
    this.pool = pool;
    this.config = pool.config.healthCheck;
    this.outlier = options.outlier ?? null;
    this.recovery = options.recovery ?? null;
  }

  /** Starts checking every backend; a no-op for a pool without `healthCheck`. */
  start(): void {
    const cfg = this.config;
    if (cfg === null || this.running || this.stopped) return;
    this.running = true;
    for (const backend of this.pool.backends) {
      const target = makeTarget(backend, cfg);
      this.targets.push(target);
      // Spread the first round over a tenth of the interval rather than firing all at once.
      this.schedule(target, Math.random() * cfg.interval * JITTER);
    }
  }

  /** Stops every loop, abandons checks in flight (their results are dropped) and closes the connections. */
  async stop(): Promise<void> {
    this.stopped = true;
    const closing: Promise<void>[] = [];
    for (const t of this.targets) {
      if (t.timer !== null) clearTimeout(t.timer);
      t.timer = null;
      t.abort?.abort();
      closing.push(t.client.destroy().catch(() => {}));
    }
    await Promise.all(closing);
  }

  private schedule(target: Target, delay: number): void {
    if (this.stopped) return;
    target.timer = setTimeout(runCheck, Math.max(0, delay), this, target);
    // Checks alone must not keep a process alive that is otherwise shutting down.
    target.timer.unref();
  }

  /** Runs one check of `target` and schedules the next; never throws. */
  async check(target: Target): Promise<void> {
    const cfg = this.config!;
    target.timer = null;
    const started = performance.now();
    const outcome = await probe(target, cfg);
    if (this.stopped) return;
    this.record(target.backend, cfg, outcome, started);
    const next = started + cfg.interval * (1 + JITTER * (Math.random() - 0.5));
    this.schedule(target, next - performance.now());
  }

  private record(backend: Backend, cfg: HealthCheckConfig, outcome: Outcome, started: number): void {
    const ms = performance.now() - started;
    const latencyMs = Math.round(ms);
    backend.lastCheck = { time: Date.now(), ok: outcome.ok, latencyMs, detail: outcome.detail, status: outcome.status };
    backend.record.check(ms / 1000);
    const check = { ok: outcome.ok, status: outcome.status, detail: outcome.detail, durationMs: latencyMs };
    let streak = streaks.get(backend);
    if (streak === undefined) {
      streak = { ok: 0, failed: 0 };
      streaks.set(backend, streak);
    }
    if (!outcome.ok) {
      backend.checksFailed++;
      streak.ok = 0;
      streak.failed++;
      if (backend.healthy && streak.failed >= cfg.fall) {
        backend.setHealthy(false, `${streak.failed} health checks failed: ${outcome.detail}`, check);
      }
      return;
    }
    backend.checksOk++;
    streak.failed = 0;
    streak.ok++;
    if (!backend.healthy && streak.ok >= cfg.rise) {
      backend.setHealthy(true, `${streak.ok} health checks passed`, check);
      // An ejected backend's recovery is announced when the ejection ends, below.
      if (!backend.ejected) this.recovery?.recovered(backend);
    }
    if (backend.ejected) this.outlier?.reinstate(backend, started);
  }
}

// Module-level so that scheduling a check allocates no closure.
function runCheck(checker: HealthChecker, target: Target): void {
  void checker.check(target);
}

function makeTarget(backend: Backend, cfg: HealthCheckConfig): Target {
  const origin = new URL(backend.config.origin);
  const host = cfg.host ?? origin.host;
  if (cfg.port !== null) origin.port = String(cfg.port);
  ClientClass ??= (require('undici') as typeof import('undici')).Client;
  const client = new ClientClass(origin.origin, {
    connectTimeout: cfg.timeout,
    headersTimeout: cfg.timeout,
    bodyTimeout: cfg.timeout,
    // Keep the one connection across checks: a check every few seconds costs no handshakes.
    keepAliveTimeout: Math.max(4000, cfg.interval * 2),
    pipelining: 1,
    // The same TLS settings as proxied requests (CA, SNI name, client certificate).
    ...upstreamTls({ ...backend.config, protocol: origin.protocol as 'http:' | 'https:' }, backend.poolConfig.tls ?? null, cfg.timeout),
    // A backend that wants the PROXY protocol refuses connections without it: checks of
    // its own port send one that names no client, as HAProxy's do (its check-send-proxy
    // default); a check of another port (a sidecar) sends none.
    ...(backend.proxyVersion !== null && cfg.port === null
      ? { connect: headerConnector(backend.config, backend.poolConfig.tls ?? null, cfg.timeout)(localProxyHeader(backend.proxyVersion)) }
      : {}),
  });
  return { backend, client, headers: { host, 'user-agent': 'tandem-health-check' }, timer: null, abort: null };
}

interface Outcome {
  readonly ok: boolean;
  readonly detail: string;
  /** The status answered; null when there was no answer. */
  readonly status: number | null;
}

/** One HTTP check bounded by `timeout` from start to the last body byte read. */
async function probe(target: Target, cfg: HealthCheckConfig): Promise<Outcome> {
  const abort = new AbortController();
  target.abort = abort;
  const timer = setTimeout(() => abort.abort(), cfg.timeout);
  try {
    const res = await target.client.request({ path: cfg.path, method: cfg.method, headers: target.headers, signal: abort.signal });
    const status = res.statusCode;
    if (!statusExpected(cfg, status)) {
      await res.body.dump({ limit: CHECK_BODY_LIMIT }).catch(() => {});
      return { ok: false, detail: `status ${status}`, status };
    }
    if (cfg.expectBody === null || cfg.method === 'HEAD') {
      await res.body.dump({ limit: CHECK_BODY_LIMIT });
      return { ok: true, detail: `status ${status}`, status };
    }
    const found = await bodyContains(res.body, cfg.expectBody);
    return found ? { ok: true, detail: `status ${status}`, status } : { ok: false, detail: `body lacks ${JSON.stringify(cfg.expectBody)}`, status };
  } catch (err) {
    if (abort.signal.aborted) return { ok: false, detail: `timeout after ${cfg.timeout}ms`, status: null };
    return { ok: false, detail: describe(err), status: null };
  } finally {
    clearTimeout(timer);
    target.abort = null;
  }
}

function statusExpected(cfg: HealthCheckConfig, status: number): boolean {
  for (const [lo, hi] of cfg.expectStatus) if (status >= lo && status <= hi) return true;
  return false;
}

/** Reads at most CHECK_BODY_LIMIT bytes looking for `needle`; leaving early drops the connection. */
async function bodyContains(body: AsyncIterable<Buffer>, needle: string): Promise<boolean> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    chunks.push(chunk);
    size += chunk.length;
    // Searching the joined bytes finds a needle split across chunks.
    const seen = Buffer.concat(chunks, Math.min(size, CHECK_BODY_LIMIT));
    if (seen.includes(needle)) return true;
    if (size >= CHECK_BODY_LIMIT) return false;
  }
  return false;
}

function describe(err: unknown): string {
  if (err !== null && typeof err === 'object') {
    const e = err as { code?: unknown; message?: unknown };
    if (typeof e.code === 'string') return e.code;
    if (typeof e.message === 'string') return e.message;
  }
  return String(err);
}
