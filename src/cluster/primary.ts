// The primary of a tandem cluster: the control plane. It loads and validates the
// config, runs the health checks (once, however many workers there are), answers the
// admin API and holds the VIP leases, while its workers (src/cluster/worker.ts) carry
// the traffic. Every worker binds every listener with SO_REUSEPORT (src/cluster/ports.ts
// says why), so the kernel spreads connections over them and the primary is not in
// the path of any connection.
//
// * Backend state: every change the primary's checks, slow start or an operator makes
//   goes to every worker as it happens; workers report their passive ejections back.
// * Counts: workers send their counters once a second and when asked before a scrape;
//   the primary writes the sums into its own counters and backends, so /metrics and
//   the status API read totals as if one process had served everything.
// * Reload: validated once here, then two-phase: every worker binds the listeners the
//   new config adds (prepare); only when all could, the primary and every worker swap
//   (commit). A failed reload changes nothing anywhere.
// * A worker that dies is replaced at once (with growing delays if replacements keep
//   dying young). Connections it had accepted, or that waited in its accept queue, are
//   reset; clients retry those. With two or more workers the port stays open
//   throughout. With one worker there is a gap: nothing listens until the replacement
//   has bound the port again (about half a second), and connections are refused.
// * Shutdown: VIPs are released first, then every worker stops accepting and finishes
//   its requests within shutdownTimeout, then health checks stop. Workers ignore the
//   signals a whole process group gets and wait for this order (src/cluster/worker.ts).
//   A reload under way gives up at its next step, and no worker is forked any more.

import { errors, TandemError } from '../errors.ts';
import type { Config } from '../config/types.ts';
import { loadConfigFile } from '../config/load.ts';
import type { EventBus, TandemEvent } from '../events.ts';
import { Instance, type VipControl } from '../main.ts';
import type { Pool } from '../pool/pool.ts';
import type { RequestCounters } from '../dataplane/telemetry.ts';
import type { AdminRuntime, ListenerView, ReloadOutcome, VipStatusView } from '../admin/runtime.ts';
import { backendState, primaryHealth } from './health.ts';
import { PortPins } from './ports.ts';
import type { BackendState, BoundListener, ToWorker } from './protocol.ts';
import { WorkerSet, type WorkerSlot } from './workers.ts';

/**
 * Node flags for worker processes, added to the primary's own (which workers inherit,
 * as they inherit NODE_OPTIONS). None: `--max-semi-space-size=1` bounded a streaming
 * worker's RSS but cost 12-35% more CPU per small request; the GC pacer in
 * src/dataplane/gc-pacer.ts bounds it (126-133 MB for 1 GiB each way) without that cost.
 */
export const WORKER_FLAGS: readonly string[] = [];

/**
 * Environment added for worker processes. Fewer glibc malloc arenas keep a streaming
 * worker's RSS down (buffers freed by V8's helper threads otherwise spread over many
 * arenas); an operator's own setting wins.
 */
function workerEnv(): Record<string, string> {
  return { MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2' };
}

/** How long a worker may take to bind its listeners at start. */
const START_TIMEOUT_MS = 30_000;
/** How long a worker may take to answer a reload's prepare or commit. */
const RELOAD_TIMEOUT_MS = 10_000;
/** How long a scrape waits for a worker's counts before using its last ones. */
const SNAPSHOT_TIMEOUT_MS = 1000;
/** Kill a stopping worker this long after its shutdown timeout. */
const STOP_GRACE_MS = 2000;
/** A worker that dies younger than this counts as crashing at start; replacements then back off. */
const YOUNG_MS = 5000;
const MAX_BACKOFF_MS = 10_000;

export interface PrimaryOptions {
  file: string;
  node: string | null;
  /** Overrides the config's `workers`; null: as configured. */
  workers: number | null;
  log: (msg: string) => void;
  /** The counters the metrics registry reads; the primary fills them with the workers' sums. */
  counters: RequestCounters;
}

/** The control plane of a cluster; what the admin API and HA see as the running instance. */
export class ClusterPrimary implements AdminRuntime {
  readonly file: string;
  readonly node: string | null;
  readonly bus: EventBus;
  ha: VipControl | null;
  /** Pools with health checks and no listeners; its Backend objects never carry traffic. */
  private readonly control: Instance;
  private readonly workers: WorkerSet;
  private readonly pins: PortPins;
  private readonly counters: RequestCounters;
  private readonly log: (msg: string) => void;
  private readonly workersOverride: number | null;
  /** The config as workers run it: ports pinned, no admin or HA part. */
  private workerConfig: Config;
  /** Listener name -> bound address, as the workers last reported. */
  private addresses: Map<string, string>;
  private reloading: Promise<ReloadOutcome> | null;
  /** close() was called: no reload goes on past its next step, and no worker is forked. */
  private stopping: boolean;
  private closing: Promise<void> | null;
  /** Start-up is over: from now on a worker that dies is replaced. */
  private serving: boolean;
  /** Workers in a row that died young. */
  private crashes: number;
  private readonly onEvent: (event: TandemEvent) => void;

  private constructor(control: Instance, workers: WorkerSet, pins: PortPins, workerConfig: Config, opts: PrimaryOptions) {
    this.file = opts.file;
    this.node = opts.node;
    this.control = control;
    this.bus = control.bus;
    this.ha = null;
    this.workers = workers;
    this.pins = pins;
    this.counters = opts.counters;
    this.log = opts.log;
    this.workersOverride = opts.workers;
    this.workerConfig = workerConfig;
    this.addresses = new Map();
    this.reloading = null;
    this.stopping = false;
    this.closing = null;
    this.serving = false;
    this.crashes = 0;
    this.onEvent = (event) => {
      if (event.type !== 'backend') return;
      const b = this.control.generation.pools.get(event.pool)?.pool.byName.get(event.backend);
      if (b !== undefined) this.workers.broadcast({ t: 'state', state: backendState(b) });
    };
    this.bus.on('event', this.onEvent);
    workers.on('ejected', (_slot, pool, backend, reason) => this.syncEjected(pool, backend, reason));
    workers.on('stats', () => this.workers.stats.writeBackends(this.poolList()));
    workers.on('exit', (slot, code, signal) => this.exited(slot, code, signal));
  }

  /**
   * Loads the config, starts health checks and forks the workers; resolves once every
   * worker has bound every listener. Throws TandemError on a bad config or a busy port.
   */
  static async start(opts: PrimaryOptions): Promise<ClusterPrimary> {
    const result = await loadConfigFile(opts.file, { env: process.env, node: opts.node });
    if (!result.ok) throw new TandemError(errors.CONFIG_INVALID, '\n' + result.errors.join('\n'));
    const pins = new PortPins();
    let resolved;
    try {
      resolved = await pins.resolve(result.config);
    } catch (err) {
      throw new TandemError(errors.LISTEN, (err as Error).message, { cause: err });
    }
    pins.keep(resolved.pins);
    const workers = new WorkerSet([...process.execArgv, ...WORKER_FLAGS], workerEnv());
    const control = await Instance.fromConfig(result.config, {
      file: opts.file,
      node: opts.node,
      metrics: null,
      log: opts.log,
      serve: false,
      health: primaryHealth(workers),
    });
    const primary = new ClusterPrimary(control, workers, pins, resolved.config, opts);
    const count = opts.workers ?? result.config.workers;
    const starting = Array.from({ length: count }, () => primary.spawn()!.ready);
    try {
      const bound = await Promise.all(starting.map((p) => withTimeout(p, START_TIMEOUT_MS, 'a worker did not bind its listeners in time')));
      primary.remember(bound[0]);
      primary.serving = true;
    } catch (err) {
      await primary.close(0);
      throw new TandemError(errors.LISTEN, (err as Error).message, { cause: err });
    }
    return primary;
  }

  /** Forks a worker; null once stopping, since close() may already have stopped the ones it knew of. */
  private spawn(): { slot: WorkerSlot; ready: Promise<readonly BoundListener[]> } | null {
    if (this.stopping) return null;
    const started = this.workers.spawn(() => this.startMessage());
    this.log(`worker ${started.slot.id} pid ${started.slot.pid}`);
    return started;
  }

  private startMessage(): ToWorker {
    return { t: 'start', config: this.workerConfig, states: this.states() };
  }

  private states(): BackendState[] {
    const out: BackendState[] = [];
    for (const p of this.poolList()) for (const b of p.backends) out.push(backendState(b));
    return out;
  }

  private poolList(): Pool[] {
    return Array.from(this.control.generation.pools.values(), (rt) => rt.pool);
  }

  private remember(bound: readonly BoundListener[]): void {
    if (bound.length === 0) return;
    this.addresses = new Map(bound.map((l) => [l.name, l.address]));
  }

  private exited(slot: WorkerSlot, code: number | null, signal: string | null): void {
    for (const key of slot.ejected) {
      const [pool, backend] = key.split('\u0000');
      this.syncEjected(pool, backend, `worker ${slot.id} exited`);
    }
    this.workers.stats.writeBackends(this.poolList());
    if (this.stopping || slot.stopping || !this.serving) return;
    const how = signal !== null ? `signal ${signal}` : `code ${code}`;
    const young = performance.now() - slot.since < YOUNG_MS;
    this.crashes = young ? this.crashes + 1 : 0;
    const delay = this.crashes <= 1 ? 0 : Math.min(MAX_BACKOFF_MS, 100 * 2 ** this.crashes);
    this.log(`worker ${slot.id} pid ${slot.pid} exited (${how}); starting a replacement${delay > 0 ? ` in ${delay} ms` : ''}`);
    const replace = () => {
      const started = this.spawn();
      if (started === null) return;
      const { slot: next, ready } = started;
      ready.then(
        (bound) => this.remember(bound),
        (err: Error) => {
          if (!next.exited) this.log(`worker ${next.id} could not start: ${err.message}`);
        },
      );
    };
    if (delay === 0) replace();
    else setTimeout(replace, delay).unref();
  }

  /** The primary's backend is ejected while any worker has it ejected. */
  private syncEjected(pool: string, backend: string, reason: string): void {
    const b = this.control.generation.pools.get(pool)?.pool.byName.get(backend);
    if (b !== undefined) b.setEjected(this.workers.anyEjected(pool, backend), reason);
  }

  config(): Config {
    return this.control.config();
  }

  pools(): ReadonlyMap<string, Pool> {
    return this.control.pools();
  }

  listeners(): ListenerView[] {
    const bound = this.workers.anyReady();
    return this.workerConfig.listeners.map((l) => ({
      name: l.name,
      address: this.addresses.get(l.name) ?? (l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`),
      bound,
      connections: this.workers.stats.connections(l.name),
    }));
  }

  vips(): VipStatusView[] {
    return this.ha?.status() ?? [];
  }

  releaseVip(name: string): Promise<boolean> {
    return this.ha?.release(name) ?? Promise.resolve(false);
  }

  get leaseDurationMs(): number | null {
    return this.control.leaseDurationMs;
  }

  /** Pids of the live workers, oldest first. */
  workerPids(): number[] {
    return this.workers.list().map((s) => s.pid);
  }

  /** True when a worker serves and every given pool (all when empty) has an available backend. */
  ready(pools: readonly string[] = []): boolean {
    return !this.stopping && this.workers.anyReady() && this.control.ready(pools);
  }

  /** Asks every worker for its counts and writes the sums into the counters and backends; for a scrape. */
  async gather(): Promise<void> {
    const asked: Promise<unknown>[] = [];
    for (const slot of this.workers.list()) {
      if (!slot.ready) continue;
      const id = this.workers.newId();
      asked.push(this.workers.request(slot, id, { t: 'snapshot', id }, SNAPSHOT_TIMEOUT_MS));
    }
    await Promise.all(asked);
    this.workers.stats.writeCounters(this.counters);
    this.workers.stats.writeBackends(this.poolList());
  }

  /** Loads the file again; on success every process swaps to it, else nothing changes anywhere. */
  reload(): Promise<ReloadOutcome> {
    // Reloads queue behind each other: two at once would race on listeners.
    const run = () => this.reloadNow();
    const next = (this.reloading ?? Promise.resolve()).then(run, run);
    this.reloading = next;
    return next;
  }

  // A stop may begin at any await below: `stopping` is checked after each one, so that a
  // reload never commits to workers that are stopping, nor forks new ones after close()
  // has stopped the workers it knew of (they would keep the primary alive for ever).
  private async reloadNow(): Promise<ReloadOutcome> {
    if (this.stopping) return this.shuttingDown();
    const result = await loadConfigFile(this.file, { env: process.env, node: this.node });
    if (this.stopping) return this.shuttingDown();
    if (!result.ok) return this.rejected(result.errors);
    let resolved;
    try {
      resolved = await this.pins.resolve(result.config);
    } catch (err) {
      return this.rejected([`${this.file}: ${(err as Error).message}`]);
    }
    if (this.stopping) return this.shuttingDown();

    // Phase one: every worker binds the listeners the new config adds.
    const id = this.workers.newId();
    const slots = this.workers.list().filter((s) => s.started && !s.stopping);
    const answers = await Promise.all(slots.map((s) => this.workers.request(s, id, { t: 'prepare', id, config: resolved.config }, RELOAD_TIMEOUT_MS)));
    if (this.stopping) {
      this.workers.broadcast({ t: 'abort', id });
      return this.shuttingDown();
    }
    const problems: string[] = [];
    answers.forEach((a, i) => {
      // A worker that died meanwhile is replaced with whatever config is in force then.
      if (a === null && !slots[i].exited) problems.push(`${this.file}: worker ${slots[i].id} did not answer`);
      else if (a !== null && a.t === 'prepared' && a.error !== null) problems.push(`${this.file}: ${a.error}`);
    });
    if (problems.length > 0) {
      this.workers.broadcast({ t: 'abort', id });
      return this.rejected([...new Set(problems)]);
    }

    // Phase two: the primary's pools and health, then every worker.
    await this.control.apply(result.config);
    if (this.stopping) {
      this.workers.broadcast({ t: 'abort', id });
      return this.shuttingDown();
    }
    this.pins.keep(resolved.pins);
    this.workerConfig = resolved.config;
    const commit: ToWorker = { t: 'commit', id, config: resolved.config, states: this.states() };
    const committing = this.workers.list().filter((s) => s.started);
    const done = await Promise.all(committing.map((s) => this.workers.request(s, id, commit, RELOAD_TIMEOUT_MS)));
    // Workers that are stopping answer nothing; there is nothing to replace or resize then.
    if (this.stopping) return this.shuttingDown();
    done.forEach((a, i) => {
      if (a === null || a.t !== 'committed') return;
      if (a.error === null) this.remember(a.listeners);
      // It could not follow (it started too late to prepare, and its apply failed): a
      // replacement starts from the new config.
      else committing[i].worker.process.kill('SIGKILL');
    });
    this.resize();
    this.bus.publish({ type: 'reload', result: 'success', errors: [] });
    return { ok: true, errors: [] };
  }

  private shuttingDown(): ReloadOutcome {
    return this.rejected([`${this.file}: shutting down`]);
  }

  private rejected(errs: string[]): ReloadOutcome {
    this.bus.publish({ type: 'reload', result: 'failure', errors: errs });
    return { ok: false, errors: errs };
  }

  /** Forks or stops workers when a reload changed `workers` (unless --workers fixed it). */
  private resize(): void {
    if (this.workersOverride !== null) return;
    const wanted = this.control.config().workers;
    const live = this.workers.list().filter((s) => !s.stopping);
    for (let n = live.length; n < wanted; n++) {
      this.spawn()?.ready.then((bound) => this.remember(bound), () => {});
    }
    for (const slot of live.slice(wanted).reverse()) {
      this.log(`worker ${slot.id} pid ${slot.pid} stopping: workers is ${wanted} now`);
      void this.workers.stop(slot, this.control.config().shutdownTimeout, STOP_GRACE_MS);
    }
  }

  /**
   * Graceful stop: VIPs are released first, then every worker stops accepting and
   * finishes its requests within `timeout` ms, then health checks stop.
   */
  close(timeout: number = this.control.config().shutdownTimeout): Promise<void> {
    if (this.closing === null) {
      this.stopping = true;
      this.closing = this.closeNow(timeout);
    }
    return this.closing;
  }

  private async closeNow(timeout: number): Promise<void> {
    if (this.ha !== null) await this.ha.stop().catch((err) => this.log(`ha stop: ${(err as Error).message}`));
    // No worker is forked once stopping; the loop is for one forked before that whose
    // slot a list taken earlier would miss. Each round ends within timeout + grace.
    for (let left = this.workers.list(); left.length > 0; left = this.workers.list()) {
      await Promise.all(left.map((s) => this.workers.stop(s, timeout, STOP_GRACE_MS)));
    }
    // A reload under way ends at its next step now (its workers are gone, so it waits for
    // none of them); wait for it, or its apply could restart health checks after the
    // close below, and their timers would keep this process alive.
    await this.reloading?.then(() => {}, (err: Error) => this.log(`reload during stop: ${err.message}`));
    this.bus.off('event', this.onEvent);
    await this.control.close(0);
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
