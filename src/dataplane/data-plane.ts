// The data plane: listeners, the router, pools and forwarding, and the counters of the
// requests it serves. It runs in each worker process, or in the control plane's process
// with `--workers 0`, and is driven only through src/dataplane/agent.ts, which follows
// the control plane's messages. It checks no backend itself: the control plane's
// verdicts arrive as BackendStates; passive outlier detection stays here, since only
// the data plane sees its requests fail.

import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config, ListenerConfig } from '../config/types.ts';
import { EventBus } from '../events.ts';
import type { Logger } from '../log.ts';
import type { Backend } from '../pool/backend.ts';
import type { PoolHealth } from '../pool/health/index.ts';
import { Pool } from '../pool/pool.ts';
import { Sticky } from '../pool/sticky.ts';
import { BackendStates, dataPlaneHealth } from './backend-states.ts';
import { Generation, poolRuntime, requestDone, type PoolRuntime } from './generation.ts';
import { TrustedProxies } from './headers.ts';
import { Listener, type ListenerState } from './server.ts';
import { AccessLog } from './access-log.ts';
import { liveLabels, RequestCounters, Telemetry } from './telemetry.ts';
import { closedWithin, LINGER_POLL_MS, LINGER_READ_MS, Vacancies } from './vacate.ts';

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

/**
 * Listeners, pools and the current generation the request path reads. A config is
 * applied in two steps (prepare binds new listeners, commit swaps), so the control
 * plane can apply a reload everywhere or nowhere. Commit builds a whole new generation
 * beside the old one and swaps it in one assignment.
 */
export class DataPlane implements ListenerState {
  /** Backend changes of this data plane's pools; the agent reports ejections from it. */
  readonly bus: EventBus;
  readonly states: BackendStates;
  readonly counters: RequestCounters;
  generation: Generation;
  trusted: TrustedProxies;
  observer: Telemetry;
  shuttingDown: boolean;
  readonly vacancies: Vacancies;
  /** Proxied requests in flight (the request path counts them in and out). */
  active: number;
  private current: Config;
  private entries: Map<string, PoolEntry>;
  private readonly listenerMap: Map<string, Listener>;
  private accessLog: AccessLog | null;
  private readonly log: Logger;
  /** Replaced pools still waiting for their last request (their `retired`); closed at once on close(). */
  private readonly retiring: Set<() => Promise<void>>;

  /** `count`: keep request counters (off for the benchmark's bare data plane). */
  constructor(config: Config, states: BackendStates, count: boolean, log: Logger) {
    this.log = log;
    this.bus = new EventBus();
    this.states = states;
    this.counters = new RequestCounters();
    this.current = config;
    this.shuttingDown = false;
    this.vacancies = new Vacancies();
    this.active = 0;
    this.entries = new Map();
    this.listenerMap = new Map();
    this.retiring = new Set();
    this.accessLog = this.openAccessLog(config);
    this.trusted = new TrustedProxies(config.trustedProxies);
    this.observer = new Telemetry(count ? this.counters : null, this.accessLog, config.listeners.map((l) => l.name));
    this.entries = this.buildPools(config, new Map());
    this.generation = this.buildGeneration(config, this.entries);
  }

  /** Binds every listener of the config; on failure unbinds what it bound and throws. */
  async listen(): Promise<void> {
    for (const [i, lc] of this.current.listeners.entries()) {
      const l = new Listener(lc, i, this);
      this.listenerMap.set(lc.name, l);
      await l.listen();
    }
  }

  config(): Config {
    return this.current;
  }

  listeners(): Listener[] {
    return [...this.listenerMap.values()];
  }

  /**
   * The VIP at `address` is about to move to another node (`leaving`), or stays or is
   * gone (see vacate.ts). Waits up to `wait` ms for its connections to close after their
   * next answer, then closes the idle rest; resolves with the busy ones left.
   */
  async vacate(address: string, leaving: boolean, wait: number): Promise<number> {
    this.vacancies.set(address, leaving);
    if (!leaving) return 0;
    const listeners = this.listeners();
    const open = listeners.flatMap((l) => l.vacate(address));
    await closedWithin(open, wait);
    const among = new Set(open);
    let busy = 0;
    for (const l of listeners) busy += l.closeIdle(among);
    return busy;
  }

  /**
   * The VIP at `address` has a new holder that serves, and the address is about to go
   * (see departure.ts): requests already received on it get their answers out first.
   * Gives a request still on its way in LINGER_READ_MS to be read, then waits until no
   * connection on the address has one in flight, at most `wait` ms; resolves with how many
   * still have.
   */
  async linger(address: string, wait: number): Promise<number> {
    const until = performance.now() + wait;
    await sleep(LINGER_READ_MS);
    await new Promise((r) => setImmediate(r));
    let busy = this.busyOn(address);
    while (busy > 0 && performance.now() < until) {
      await sleep(LINGER_POLL_MS);
      busy = this.busyOn(address);
    }
    return busy;
  }

  private busyOn(address: string): number {
    let busy = 0;
    for (const l of this.listeners()) busy += l.busyOn(address);
    return busy;
  }

  /** Every backend of the current pools. */
  *backends(): IterableIterator<Backend> {
    for (const e of this.entries.values()) yield* e.pool.backends;
  }

  pools(): IterableIterator<PoolRuntime> {
    return this.generation.pools.values();
  }

  /**
   * First half of a reload: binds the listeners the config adds or moves. Nothing else
   * changes, so the control plane can prepare every data plane and commit only when all
   * succeeded.
   */
  async prepare(config: Config): Promise<PreparedConfig> {
    const added: Listener[] = [];
    const keep = new Set<string>();
    for (const [i, lc] of config.listeners.entries()) {
      const old = this.listenerMap.get(lc.name);
      if (old !== undefined && keepsServer(old.config, lc)) {
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
        await l.listen();
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

  /** Second half of a reload: swaps config, pools, generation and listeners. */
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
    // Counts of what the config no longer has go: their series disappear from /metrics.
    this.counters.prune(liveLabels(config));
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
    } else {
      // Every reload reopens the file, as SIGUSR1 does: `systemctl reload` after logrotate works too.
      await this.reopenLogs();
    }

    // Old pools: health stops (state lives on reused backends); backends nobody reuses
    // close once the old config's last request is done (one may still retry on them).
    const reused = new Set<Backend>();
    for (const e of entries.values()) for (const b of e.pool.backends) reused.add(b);
    for (const e of oldEntries.values()) {
      await e.health.stop();
      this.retire(e.runtime, () => e.pool.close(reused));
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

  /** prepare() and commit() in one go, for a data plane that started too late to prepare. */
  async apply(config: Config): Promise<void> {
    await this.commit(await this.prepare(config));
  }

  /** Closes a replaced pool's connections once its last request is done (now, when none is left). */
  private retire(runtime: PoolRuntime, close: () => Promise<void>): void {
    const retired = () => {
      runtime.retired = null;
      this.retiring.delete(retired);
      return close().catch(() => undefined);
    };
    runtime.retired = retired;
    this.retiring.add(retired);
    requestDone(runtime);
  }

  private buildPools(config: Config, old: ReadonlyMap<string, PoolEntry>): Map<string, PoolEntry> {
    const entries = new Map<string, PoolEntry>();
    const health = dataPlaneHealth(this.states);
    for (const [name, pc] of config.pools) {
      const prev = old.get(name);
      const pool = new Pool(pc, this.bus, prev?.pool.byName);
      const h = health(pool);
      const sticky = pc.sticky === null ? null : new Sticky(pool);
      entries.set(name, { pool, health: h, runtime: poolRuntime(pool, h.outlier, sticky) });
    }
    return entries;
  }

  /**
   * Opens the access log file again (logrotate renamed it); resolves once new lines go to
   * the new file, with null or the reason it could not be opened.
   */
  async reopenLogs(): Promise<string | null> {
    const log = this.accessLog;
    if (log === null) return null;
    const error = await log.reopen();
    if (error !== null) return `access log ${log.path}: ${error}`;
    return null;
  }

  private openAccessLog(config: Config): AccessLog | null {
    return config.accessLog !== null ? new AccessLog(config.accessLog.path, (msg) => this.log.error({ accessLog: config.accessLog!.path }, msg)) : null;
  }

  private buildGeneration(config: Config, entries: ReadonlyMap<string, PoolEntry>): Generation {
    const runtimes = new Map<string, PoolRuntime>();
    for (const [name, e] of entries) runtimes.set(name, e.runtime);
    return new Generation(config, runtimes);
  }

  /**
   * Graceful stop: listeners stop accepting, clients are told to close, and in-flight
   * requests get up to `timeout` ms to finish.
   */
  async close(timeout: number): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    const listeners = [...this.listenerMap.values()];
    const closed = Promise.all(listeners.map((l) => l.stopAccepting()));
    const deadline = Date.now() + timeout;
    while (this.active > 0 && Date.now() < deadline) {
      for (const l of listeners) l.closeIdleConnections();
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const l of listeners) l.destroyAll();
    await closed;
    for (const e of this.entries.values()) {
      await e.health.stop();
      await e.pool.close().catch(() => undefined);
    }
    for (const retired of this.retiring) await retired();
    await this.accessLog?.close();
  }
}

/**
 * True when a reload can apply `next` to the running server of `running` (timeouts,
 * limits and renewed certificates are set in place by Listener.update). Whatever the
 * server was built with (address, TLS, HTTP/2 and its settings, PROXY protocol) takes a
 * new server instead: prepare binds it beside the old one (SO_REUSEPORT), commit swaps.
 */
export function keepsServer(running: ListenerConfig, next: ListenerConfig): boolean {
  const h2 = running.http2 === true;
  return running.host === next.host && running.port === next.port
    && JSON.stringify(running.tls) === JSON.stringify(next.tls)
    && h2 === (next.http2 === true)
    && JSON.stringify(running.proxyProtocol ?? null) === JSON.stringify(next.proxyProtocol ?? null)
    && running.engine === next.engine
    // The HTTP/2 front takes these at construction.
    && (!h2 || (running.maxHeaderSize === next.maxHeaderSize && running.keepAliveTimeout === next.keepAliveTimeout));
}
