// The control plane: it loads and validates the config, runs the health checks (once,
// however many data planes there are), answers the admin API, sums the data planes'
// counts for the metrics, and holds the VIP leases, while its data planes
// (src/dataplane/) carry the traffic. Each data plane is a worker process, or, with
// `--workers 0`, lives in this process; either way the control plane reaches it only
// through the channel of src/channel/. Every data plane binds every listener with
// SO_REUSEPORT (src/control/port-pins.ts says why), so the kernel spreads connections
// over them and the control plane is not in the path of any connection.
//
// * Backend state: every change of a verdict (health, admin state, weight) that the
//   checks, slow start or an operator make goes to every data plane once; data planes
//   report their passive ejections up, and those are not sent back down.
// * Counts: data planes send their counters once a second and when asked before a
//   scrape; the sums go into this process's counters and backends, so /metrics and the
//   status API read totals as if one process had served everything.
// * Reload: validated once here, then two-phase: every data plane binds the listeners
//   the new config adds (prepare); only when all could, the control plane and every
//   data plane swap (commit). A failed reload changes nothing anywhere.
// * A worker that dies is replaced at once (with growing delays if replacements keep
//   dying young). Connections it had accepted, or that waited in its accept queue, are
//   reset; clients retry those. With two or more workers the port stays open
//   throughout. With one worker there is a gap: nothing listens until the replacement
//   has bound the port again (about half a second), and connections are refused.
// * Shutdown: VIPs are released first, then every data plane stops accepting and
//   finishes its requests within shutdownTimeout, then health checks stop. Workers
//   ignore the signals a whole process group gets and wait for this order
//   (src/dataplane/worker-entry.ts). A reload under way gives up at its next step, and
//   no data plane is started any more.

import type { DataPlaneEnd } from '../channel/ends.ts';
import type { BackendState, BoundListener, ToDataPlane } from '../channel/protocol.ts';
import { freezeConfig } from '../config/freeze.ts';
import { loadConfigFile } from '../config/load.ts';
import type { Config } from '../config/types.ts';
import { errors, TandemError } from '../errors.ts';
import { EventBus, type TandemEvent } from '../events.ts';
import type { Pool } from '../pool/pool.ts';
import type { AdminRuntime, ListenerView, ReloadOutcome, VipStatusView } from '../admin/runtime.ts';
import { DataPlaneSet, type DataPlaneSlot, type MessageCounts } from './data-planes.ts';
import { launcher as makeLauncher, type Launcher } from './launch.ts';
import type { OperatorSide } from './operator-side.ts';
import { PortPins } from './port-pins.ts';
import { backendState, ControlPools, sameState } from './pools.ts';

/** How long a data plane may take to bind its listeners at start. */
const START_TIMEOUT_MS = 30_000;
/** How long a data plane may take to answer a reload's prepare or commit. */
const RELOAD_TIMEOUT_MS = 10_000;
/** How long a scrape waits for a data plane's counts before using its last ones. */
const SNAPSHOT_TIMEOUT_MS = 1000;
/** Kill a stopping data plane this long after its shutdown timeout. */
const STOP_GRACE_MS = 2000;
/** A worker that dies younger than this counts as crashing at start; replacements then back off. */
const YOUNG_MS = 5000;
const MAX_BACKOFF_MS = 10_000;

export interface ControlPlaneOptions {
  file: string;
  node: string | null;
  /** Overrides the config's `workers` (0: the data plane runs in this process); null: as configured. */
  workers: number | null;
  log: (msg: string) => void;
  /** No request counters, metrics, admin API or HA: the benchmark's bare data plane. Default false. */
  bare?: boolean;
}

/** The control plane; what the admin API and HA see as the running instance. */
export class ControlPlane implements AdminRuntime {
  readonly file: string;
  readonly node: string | null;
  readonly bus: EventBus;
  private current: Config;
  private readonly pools_: ControlPools;
  private readonly planes: DataPlaneSet;
  private readonly launcher: Launcher;
  private readonly pins: PortPins;
  private readonly log: (msg: string) => void;
  private readonly workersOverride: number | null;
  private readonly observing: boolean;
  /** The admin API, metrics and HA; null until started (and without `observe`). */
  private operator: OperatorSide | null;
  /** The config as data planes run it: ports pinned, no admin or HA part, frozen. */
  private dataConfig: Config;
  /** The verdict last sent per `pool\0backend`: a change of anything else sends nothing. */
  private readonly sentStates: Map<string, BackendState>;
  /** Listener name -> bound address, as the data planes last reported. */
  private addresses: Map<string, string>;
  private reloading: Promise<ReloadOutcome> | null;
  /** A reload swaps the control pools: their changes go out with its commit, not one by one. */
  private applying: boolean;
  /** close() was called: no reload goes on past its next step, and no data plane is started. */
  private stopping: boolean;
  private closing: Promise<void> | null;
  /** Start-up is over: from now on a worker that dies is replaced. */
  private serving: boolean;
  /** Workers in a row that died young. */
  private crashes: number;
  private readonly onEvent: (event: TandemEvent) => void;

  private constructor(config: Config, dataConfig: Config, pins: PortPins, launcher: Launcher, opts: ControlPlaneOptions) {
    this.file = opts.file;
    this.node = opts.node;
    this.bus = new EventBus();
    this.current = config;
    this.dataConfig = dataConfig;
    this.pins = pins;
    this.launcher = launcher;
    this.log = opts.log;
    this.workersOverride = opts.workers;
    this.observing = !(opts.bare ?? false);
    this.operator = null;
    this.sentStates = new Map();
    this.addresses = new Map();
    this.reloading = null;
    this.applying = false;
    this.stopping = false;
    this.closing = null;
    this.serving = false;
    this.crashes = 0;
    this.planes = new DataPlaneSet(launcher.launch);
    this.onEvent = (event) => {
      if (event.type === 'backend' && !this.applying) this.sendState(event.pool, event.backend);
    };
    this.bus.on('event', this.onEvent);
    this.pools_ = new ControlPools(config, this.bus, this.planes);
    this.planes.on('ejected', (_slot, pool, backend, reason) => this.syncEjected(pool, backend, reason));
    this.planes.on('stats', () => this.planes.counts.writeBackends(this.pools_.list()));
    this.planes.on('exit', (slot, code, signal) => this.exited(slot, code, signal));
  }

  /**
   * Loads the config, starts health checks and the data planes, then the admin API and
   * HA; resolves once every data plane has bound every listener. Throws TandemError on a
   * bad config or a busy port.
   */
  static async start(opts: ControlPlaneOptions): Promise<ControlPlane> {
    const result = await loadConfigFile(opts.file, { env: process.env, node: opts.node });
    if (!result.ok) throw new TandemError(errors.CONFIG_INVALID, '\n' + result.errors.join('\n'));
    const config = freezeConfig(result.config);
    const pins = new PortPins();
    let resolved;
    try {
      resolved = await pins.resolve(config);
    } catch (err) {
      throw new TandemError(errors.LISTEN, (err as Error).message, { cause: err });
    }
    pins.keep(resolved.pins);
    const workers = opts.workers ?? config.workers;
    const launcher = await makeLauncher(workers === 0, opts.log);
    const plane = new ControlPlane(config, freezeConfig(resolved.config), pins, launcher, opts);
    const starting = Array.from({ length: Math.max(1, workers) }, () => plane.spawn()!.ready);
    try {
      const bound = await Promise.all(starting.map((p) => withTimeout(p, START_TIMEOUT_MS, 'a worker did not bind its listeners in time')));
      plane.remember(bound[0]);
      plane.serving = true;
    } catch (err) {
      await plane.close(0);
      throw new TandemError(errors.LISTEN, (err as Error).message, { cause: err });
    }
    for (const l of plane.listeners()) opts.log(`listener ${l.name} on ${l.address}`);
    if (plane.observing) {
      try {
        // Loaded here, not at the top: the benchmark's bare data plane runs without it.
        const { OperatorSide } = await import('./operator-side.ts');
        plane.operator = await OperatorSide.start(plane, opts.log);
      } catch (err) {
        await plane.close(0);
        throw err;
      }
    }
    return plane;
  }

  /** Starts a data plane; null once stopping, since close() may already have stopped the ones it knew of. */
  private spawn(): { slot: DataPlaneSlot; ready: Promise<readonly BoundListener[]> } | null {
    if (this.stopping) return null;
    const started = this.planes.spawn(() => this.startMessage());
    this.log(this.launcher.inProcess ? `data plane in this process, pid ${started.slot.pid}` : `worker ${started.slot.id} pid ${started.slot.pid}`);
    return started;
  }

  private startMessage(): ToDataPlane {
    return { t: 'start', config: this.dataConfig, states: this.statesSent(), count: this.observing };
  }

  /** Every backend's verdict, recorded as sent. */
  private statesSent(): BackendState[] {
    const states = this.pools_.states();
    for (const s of states) this.sentStates.set(`${s.pool}\u0000${s.backend}`, s);
    return states;
  }

  /** Sends a backend's verdict to every data plane, unless it is what they have already. */
  private sendState(pool: string, backend: string): void {
    const b = this.pools_.backend(pool, backend);
    if (b === undefined) return;
    const state = backendState(b);
    const key = `${pool}\u0000${backend}`;
    if (sameState(this.sentStates.get(key), state)) return;
    this.sentStates.set(key, state);
    this.planes.broadcast({ t: 'state', state });
  }

  private remember(bound: readonly BoundListener[]): void {
    if (bound.length === 0) return;
    this.addresses = new Map(bound.map((l) => [l.name, l.address]));
  }

  private exited(slot: DataPlaneSlot, code: number | null, signal: string | null): void {
    for (const key of slot.ejected) {
      const [pool, backend] = key.split('\u0000');
      this.syncEjected(pool, backend, `worker ${slot.id} exited`);
    }
    this.planes.counts.writeBackends(this.pools_.list());
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

  /** A backend is ejected here while any data plane has it ejected. */
  private syncEjected(pool: string, backend: string, reason: string): void {
    this.pools_.backend(pool, backend)?.setEjected(this.planes.anyEjected(pool, backend), reason);
  }

  config(): Config {
    return this.current;
  }

  pools(): ReadonlyMap<string, Pool> {
    return this.pools_.pools();
  }

  listeners(): ListenerView[] {
    const bound = this.planes.anyReady();
    return this.dataConfig.listeners.map((l) => ({
      name: l.name,
      address: this.addresses.get(l.name) ?? (l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`),
      bound,
      connections: this.planes.counts.connections(l.name),
    }));
  }

  vips(): VipStatusView[] {
    return this.operator?.ha?.status() ?? [];
  }

  releaseVip(name: string): Promise<boolean> {
    return this.operator?.ha?.release(name) ?? Promise.resolve(false);
  }

  get leaseDurationMs(): number | null {
    return this.current.ha?.leaseDuration ?? null;
  }

  /** Pids of the live data planes, oldest first. */
  workerPids(): number[] {
    return this.planes.list().map((s) => s.pid);
  }

  /** Messages through the channel by type, each way, since start. */
  channelMessages(): MessageCounts {
    return this.planes.messages;
  }

  /** True when a data plane serves and every given pool (all when empty) has an available backend. */
  ready(pools: readonly string[] = []): boolean {
    return !this.stopping && this.planes.anyReady() && this.pools_.ready(pools);
  }

  /** Asks every data plane for its counts and writes the sums into the counters and backends; for a scrape. */
  async gather(): Promise<void> {
    const asked: Promise<unknown>[] = [];
    for (const slot of this.planes.list()) {
      if (!slot.ready) continue;
      const id = this.planes.newId();
      asked.push(this.planes.request(slot, id, { t: 'snapshot', id }, SNAPSHOT_TIMEOUT_MS));
    }
    await Promise.all(asked);
    if (this.operator !== null) this.planes.counts.writeCounters(this.operator.counters);
    this.planes.counts.writeBackends(this.pools_.list());
  }

  /** Every data plane opens its access log file again (logrotate renamed it); `why` starts the line logged. */
  async reopenLogs(why: string, quietWithoutFile = false): Promise<void> {
    const file = this.dataConfig.accessLog?.path;
    if (file === undefined || file === 'stdout') return quietWithoutFile ? undefined : this.log(`${why}: no access log file to reopen`);
    const problems = await this.planes.reopenLogs(RELOAD_TIMEOUT_MS);
    this.log(problems.length === 0 ? `${why}: access log ${file} reopened` : `${why}: access log ${file} not reopened everywhere: ${problems.join('; ')}`);
  }

  /** Loads the file again; on success every data plane swaps to it, else nothing changes anywhere. Either way the access log is reopened. */
  reload(): Promise<ReloadOutcome> {
    // Reloads queue behind each other: two at once would race on listeners.
    const run = () => this.reloadNow().then(async (outcome) => {
      if (!outcome.ok && !this.stopping) await this.reopenLogs('rejected reload', true);
      return outcome;
    });
    const next = (this.reloading ?? Promise.resolve()).then(run, run);
    this.reloading = next;
    return next;
  }

  // A stop may begin at any await below: `stopping` is checked after each one, so that a
  // reload never commits to data planes that are stopping, nor starts new ones after
  // close() has stopped the ones it knew of (they would keep the process alive for ever).
  private async reloadNow(): Promise<ReloadOutcome> {
    if (this.stopping) return this.shuttingDown();
    const result = await loadConfigFile(this.file, { env: process.env, node: this.node });
    if (this.stopping) return this.shuttingDown();
    if (!result.ok) return this.rejected(result.errors);
    const config = freezeConfig(result.config);
    let resolved;
    try {
      resolved = await this.pins.resolve(config);
    } catch (err) {
      return this.rejected([`${this.file}: ${(err as Error).message}`]);
    }
    if (this.stopping) return this.shuttingDown();
    const dataConfig = freezeConfig(resolved.config);

    // Phase one: every data plane binds the listeners the new config adds.
    const id = this.planes.newId();
    const slots = this.planes.list().filter((s) => s.started && !s.stopping);
    const answers = await Promise.all(slots.map((s) => this.planes.request(s, id, { t: 'prepare', id, config: dataConfig }, RELOAD_TIMEOUT_MS)));
    if (this.stopping) {
      this.planes.broadcast({ t: 'abort', id });
      return this.shuttingDown();
    }
    const problems: string[] = [];
    answers.forEach((a, i) => {
      // A data plane that died meanwhile is replaced with whatever config is in force then.
      if (a === null && !slots[i].exited) problems.push(`${this.file}: worker ${slots[i].id} did not answer`);
      else if (a !== null && a.t === 'prepared' && a.error !== null) problems.push(`${this.file}: ${a.error}`);
    });
    if (problems.length > 0) {
      this.planes.broadcast({ t: 'abort', id });
      return this.rejected([...new Set(problems)]);
    }

    // Phase two: the control plane's pools and health, then every data plane.
    this.applying = true;
    try {
      await this.pools_.apply(config);
    } finally {
      this.applying = false;
    }
    this.current = config;
    if (this.stopping) {
      this.planes.broadcast({ t: 'abort', id });
      return this.shuttingDown();
    }
    this.pins.keep(resolved.pins);
    this.dataConfig = dataConfig;
    const commit: ToDataPlane = { t: 'commit', id, config: dataConfig, states: this.statesSent() };
    const committing = this.planes.list().filter((s) => s.started);
    const done = await Promise.all(committing.map((s) => this.planes.request(s, id, commit, RELOAD_TIMEOUT_MS)));
    // Data planes that are stopping answer nothing; there is nothing to replace or resize then.
    if (this.stopping) return this.shuttingDown();
    done.forEach((a, i) => {
      if (a === null || a.t !== 'committed') return;
      if (a.error === null) this.remember(a.listeners);
      // It could not follow (it started too late to prepare, and its apply failed): a
      // replacement starts from the new config.
      else committing[i].end.kill();
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

  /** Starts or stops workers when a reload changed `workers` (unless --workers fixed it). */
  private resize(): void {
    if (this.workersOverride !== null) return;
    const wanted = this.current.workers;
    if (this.launcher.inProcess || wanted === 0) {
      if (this.launcher.inProcess !== (wanted === 0)) this.log(`workers is ${wanted} now: moving the data plane into or out of this process takes a restart`);
      return;
    }
    const live = this.planes.list().filter((s) => !s.stopping);
    for (let n = live.length; n < wanted; n++) {
      this.spawn()?.ready.then((bound) => this.remember(bound), () => {});
    }
    for (const slot of live.slice(wanted).reverse()) {
      this.log(`worker ${slot.id} pid ${slot.pid} stopping: workers is ${wanted} now`);
      void this.planes.stop(slot, this.current.shutdownTimeout, STOP_GRACE_MS);
    }
  }

  /**
   * Graceful stop: VIPs are released first, then every data plane stops accepting and
   * finishes its requests within `timeout` ms, then health checks and the admin API stop.
   */
  close(timeout: number = this.current.shutdownTimeout): Promise<void> {
    if (this.closing === null) {
      this.stopping = true;
      this.closing = this.closeNow(timeout);
    }
    return this.closing;
  }

  private async closeNow(timeout: number): Promise<void> {
    await this.operator?.releaseVips();
    // No data plane is started once stopping; the loop is for one started before that
    // whose slot a list taken earlier would miss. Each round ends within timeout + grace.
    for (let left = this.planes.list(); left.length > 0; left = this.planes.list()) {
      await Promise.all(left.map((s) => this.planes.stop(s, timeout, STOP_GRACE_MS)));
    }
    // A reload under way ends at its next step now (its data planes are gone, so it waits
    // for none of them); wait for it, or its apply could restart health checks after the
    // close below, and their timers would keep this process alive.
    await this.reloading?.then(() => {}, (err: Error) => this.log(`reload during stop: ${err.message}`));
    this.bus.off('event', this.onEvent);
    await this.pools_.close();
    await this.operator?.close();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
