import { readFileSync } from 'node:fs';
import type { Config } from './config/types.ts';
import { TandemError, errors } from './errors.ts';
import { EventBus } from './events.ts';
import { Pool } from './pool/pool.ts';
import type { Backend } from './pool/backend.ts';
import { startPoolHealth, type PoolHealth } from './pool/health/index.ts';
import { Sticky } from './pool/sticky.ts';
import { Generation, poolRuntime, type PoolRuntime } from './dataplane/generation.ts';
import { TrustedProxies } from './dataplane/headers.ts';
import { Listener, type DataPlane } from './dataplane/server.ts';
import { AccessLog, Telemetry, type RequestMetrics } from './dataplane/telemetry.ts';
import type { AdminRuntime, ListenerView, ReloadOutcome, VipStatusView } from './admin/runtime.ts';

export interface InstanceOptions {
  file: string;
  node: string | null;
  /** Request metrics; null turns them off (benchmarks of the bare data plane). */
  metrics: RequestMetrics | null;
  log: (msg: string) => void;
  /** Starts each pool's health; default startPoolHealth (active checks in this process).
   *  Cluster workers follow their primary's checks instead. */
  health?: (pool: Pool) => PoolHealth;
  /** False: bind no listeners and keep no access log; a cluster primary checks health
   *  and answers the admin API while its workers serve. Default true. */
  serve?: boolean;
  /** Bind listeners with SO_REUSEPORT beside other processes (cluster workers); default false. */
  reusePort?: boolean;
}

/** A reload that has bound its new listeners and waits to be committed or aborted. */
export interface PreparedConfig {
  readonly config: Config;
  readonly added: readonly Listener[];
  /** Names of listeners that stay bound as they are. */
  readonly keep: ReadonlySet<string>;
}

interface PoolEntry {
  readonly pool: Pool;
  readonly health: PoolHealth;
  readonly runtime: PoolRuntime;
}

/** Hooks the admin API and HA attach to an instance. */
export interface VipControl {
  status(): VipStatusView[];
  release(vip: string): Promise<boolean>;
  stop(): Promise<void>;
}

/**
 * One running tandem: listeners, pools with their health, and the current generation
 * the data plane reads. Reload builds a whole new generation beside the old one and
 * swaps it in one assignment; nothing is torn down until the new one is in place.
 */
export class Instance implements AdminRuntime, DataPlane {
  readonly file: string;
  readonly node: string | null;
  readonly bus: EventBus;
  readonly log: (msg: string) => void;
  generation: Generation;
  trusted: TrustedProxies;
  observer: Telemetry;
  shuttingDown: boolean;
  /** Proxied requests in flight (the data plane counts them in and out). */
  active: number;
  ha: VipControl | null;
  private current: Config;
  private entries: Map<string, PoolEntry>;
  private readonly listenerMap: Map<string, Listener>;
  private accessLog: AccessLog | null;
  private readonly metrics: RequestMetrics | null;
  private readonly startHealth: (pool: Pool) => PoolHealth;
  private readonly serve: boolean;
  private readonly reusePort: boolean;
  private reloading: Promise<ReloadOutcome> | null;

  private constructor(config: Config, opts: InstanceOptions) {
    this.file = opts.file;
    this.node = opts.node;
    this.log = opts.log;
    this.bus = new EventBus();
    this.metrics = opts.metrics;
    this.startHealth = opts.health ?? startPoolHealth;
    this.serve = opts.serve ?? true;
    this.reusePort = opts.reusePort ?? false;
    this.current = config;
    this.shuttingDown = false;
    this.active = 0;
    this.ha = null;
    this.reloading = null;
    this.entries = new Map();
    this.listenerMap = new Map();
    this.accessLog = this.openAccessLog(config);
    this.trusted = new TrustedProxies(config.trustedProxies);
    this.observer = new Telemetry(this.metrics, this.accessLog, config.listeners.map((l) => l.name));
    this.entries = this.buildPools(config, new Map());
    this.generation = this.buildGeneration(config, this.entries);
  }

  /** Loads the config and binds every listener; throws TandemError on bad config or a busy port. */
  static async start(opts: InstanceOptions): Promise<Instance> {
    const result = await loadConfig(opts.file, opts.node);
    if (!result.ok) throw new TandemError(errors.CONFIG_INVALID, '\n' + result.errors.join('\n'));
    return Instance.fromConfig(result.config, opts);
  }

  /** Runs an already validated config (a cluster worker gets it from its primary); throws TandemError on a busy port. */
  static async fromConfig(config: Config, opts: InstanceOptions): Promise<Instance> {
    const instance = new Instance(config, opts);
    try {
      if (instance.serve) {
        for (const [i, lc] of config.listeners.entries()) {
          const l = new Listener(lc, i, instance);
          instance.listenerMap.set(lc.name, l);
          await l.listen(instance.reusePort);
        }
      }
    } catch (err) {
      await instance.close(0);
      throw new TandemError(errors.LISTEN, (err as Error).message, { cause: err });
    }
    return instance;
  }

  config(): Config {
    return this.current;
  }

  pools(): ReadonlyMap<string, Pool> {
    const m = new Map<string, Pool>();
    for (const [name, e] of this.entries) m.set(name, e.pool);
    return m;
  }

  listeners(): ListenerView[] {
    return [...this.listenerMap.values()].map((l) => ({
      name: l.config.name,
      address: l.address(),
      bound: l.server.listening,
      connections: l.connections.size,
    }));
  }

  vips(): VipStatusView[] {
    return this.ha?.status() ?? [];
  }

  releaseVip(name: string): Promise<boolean> {
    return this.ha?.release(name) ?? Promise.resolve(false);
  }

  get leaseDurationMs(): number | null {
    return this.current.ha?.leaseDuration ?? null;
  }

  /** True when every listener is bound and every pool the given pools (all when empty) has an available backend. */
  ready(pools: readonly string[] = []): boolean {
    if (this.shuttingDown) return false;
    for (const l of this.listenerMap.values()) if (!l.server.listening) return false;
    const names = pools.length === 0 ? [...this.entries.keys()] : pools;
    for (const n of names) {
      const e = this.entries.get(n);
      if (e === undefined || !e.pool.hasAvailable()) return false;
    }
    return true;
  }

  /** Loads the file again; on success swaps config, pools and listeners, else keeps everything. */
  reload(): Promise<ReloadOutcome> {
    // Reloads queue behind each other: two at once would race on listeners.
    const run = async (): Promise<ReloadOutcome> => {
      const result = await loadConfig(this.file, this.node);
      if (!result.ok) {
        this.bus.publish({ type: 'reload', result: 'failure', errors: result.errors });
        return { ok: false, errors: result.errors };
      }
      try {
        await this.apply(result.config);
      } catch (err) {
        const msg = `${this.file}: ${(err as Error).message}`;
        this.bus.publish({ type: 'reload', result: 'failure', errors: [msg] });
        return { ok: false, errors: [msg] };
      }
      this.bus.publish({ type: 'reload', result: 'success', errors: [] });
      return { ok: true, errors: [] };
    };
    const next = (this.reloading ?? Promise.resolve()).then(run, run);
    this.reloading = next;
    return next;
  }

  /** Swaps in a validated config: binds its new listeners first (nothing changes when one cannot bind), then swaps everything else. */
  async apply(config: Config): Promise<void> {
    await this.commit(await this.prepare(config));
  }

  /**
   * First half of apply: binds the listeners the config adds or moves. Nothing else
   * changes, so a cluster can prepare every worker and commit only when all succeeded.
   */
  async prepare(config: Config): Promise<PreparedConfig> {
    const added: Listener[] = [];
    const keep = new Set<string>();
    if (!this.serve) return { config, added, keep };
    for (const [i, lc] of config.listeners.entries()) {
      const old = this.listenerMap.get(lc.name);
      if (old !== undefined && old.config.host === lc.host && old.config.port === lc.port
        && JSON.stringify(old.config.tls) === JSON.stringify(lc.tls)) {
        // A kept TLS listener reloads its certificate at commit (renewed in place); a
        // file that does not parse must reject the reload here, before anything changes.
        if (lc.tls !== null) {
          process.getBuiltinModule('node:tls').createSecureContext({ cert: readFileSync(lc.tls.cert), key: readFileSync(lc.tls.key) });
        }
        keep.add(lc.name);
        continue;
      }
      try {
        // Inside the try: a TLS file that does not parse throws here, and the listeners
        // bound so far must be let go then too.
        const l = new Listener(lc, i, this);
        await l.listen(this.reusePort);
        added.push(l);
      } catch (err) {
        for (const a of added) await a.stopAccepting();
        throw err;
      }
    }
    return { config, added, keep };
  }

  /** Unbinds what prepare() bound; the running config was never touched. */
  async abort(prepared: PreparedConfig): Promise<void> {
    for (const l of prepared.added) await l.stopAccepting();
  }

  /** Second half of apply: swaps config, pools, generation and listeners. */
  async commit(prepared: PreparedConfig): Promise<void> {
    const { config, added, keep } = prepared;
    const before = this.current;
    const oldEntries = this.entries;
    const entries = this.buildPools(config, oldEntries);
    const generation = this.buildGeneration(config, entries);

    // The swap: from here on every new request sees the new config.
    this.current = config;
    this.entries = entries;
    this.generation = generation;
    this.trusted = new TrustedProxies(config.trustedProxies);
    this.observer.setListeners(config.listeners.map((l) => l.name));
    for (const [i, lc] of config.listeners.entries()) {
      if (keep.has(lc.name)) this.listenerMap.get(lc.name)!.update(lc, i);
    }
    const removed = [...this.listenerMap.values()].filter((l) => !keep.has(l.config.name));
    for (const l of removed) this.listenerMap.delete(l.config.name);
    for (const l of added) this.listenerMap.set(l.config.name, l);
    if (JSON.stringify(config.accessLog) !== JSON.stringify(before.accessLog)) {
      const old = this.accessLog;
      this.accessLog = this.openAccessLog(config);
      this.observer.setAccessLog(this.accessLog);
      void old?.close();
    }

    // Old pools: health stops (state lives on reused backends); backends nobody reuses drain.
    const reused = new Set<Backend>();
    for (const e of entries.values()) for (const b of e.pool.backends) reused.add(b);
    for (const e of oldEntries.values()) {
      await e.health.stop();
      void e.pool.close(reused);
    }
    // A removed listener's busy keep-alive connections must not be routed with the new
    // config's listener indexes: they are retired (answered with Connection: close) and
    // cut once the shutdown timeout has passed.
    for (const l of removed) {
      l.retire();
      const cut = setTimeout(() => l.destroyAll(), config.shutdownTimeout);
      cut.unref();
      void l.stopAccepting().then(() => clearTimeout(cut));
    }
  }

  private buildPools(config: Config, old: ReadonlyMap<string, PoolEntry>): Map<string, PoolEntry> {
    const entries = new Map<string, PoolEntry>();
    for (const [name, pc] of config.pools) {
      const prev = old.get(name);
      const pool = new Pool(pc, this.bus, prev?.pool.byName);
      const health = this.startHealth(pool);
      const sticky = pc.sticky === null ? null : new Sticky(pool);
      entries.set(name, { pool, health, runtime: poolRuntime(pool, health.outlier, sticky) });
    }
    return entries;
  }

  private openAccessLog(config: Config): AccessLog | null {
    return this.serve && config.accessLog !== null ? new AccessLog(config.accessLog.path, this.log) : null;
  }

  private buildGeneration(config: Config, entries: ReadonlyMap<string, PoolEntry>): Generation {
    const runtimes = new Map<string, PoolRuntime>();
    for (const [name, e] of entries) runtimes.set(name, e.runtime);
    return new Generation(config, runtimes);
  }

  /** Proxied requests in flight, whichever config generation they started under. */
  inFlight(): number {
    return this.active;
  }

  /**
   * Graceful stop: VIPs are released first, then listeners stop accepting, clients are
   * told to close, and in-flight requests get up to `timeout` ms to finish.
   */
  async close(timeout: number = this.current.shutdownTimeout): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    if (this.ha !== null) await this.ha.stop().catch((err) => this.log(`ha stop: ${(err as Error).message}`));
    const listeners = [...this.listenerMap.values()];
    const closed = Promise.all(listeners.map((l) => l.stopAccepting()));
    const deadline = Date.now() + timeout;
    while (this.inFlight() > 0 && Date.now() < deadline) {
      for (const l of listeners) l.server.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const l of listeners) l.destroyAll();
    await closed;
    for (const e of this.entries.values()) {
      await e.health.stop();
      await e.pool.close().catch(() => undefined);
    }
    await this.accessLog?.close();
  }
}

// Loaded on first use: a cluster worker gets its config compiled from the primary and
// never needs the YAML parser and schema (about 20 MB of its memory).
async function loadConfig(file: string, node: string | null) {
  const { loadConfigFile } = await import('./config/load.ts');
  return loadConfigFile(file, { env: process.env, node });
}
