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
// * Counts: data planes send theirs once a second and before a scrape (counts.ts).
// * Reload: validated once here, then two-phase: every data plane binds the listeners
//   the new config adds (prepare); only when all could, the control plane and every
//   data plane and the admin API swap (commit). A failed reload changes nothing anywhere.
// * A worker that dies is replaced at once (restart-backoff.ts); connections it had
//   accepted are reset. With one worker, nothing listens until the replacement has bound
//   the port again (about half a second); with two or more the port stays open.
// * Shutdown: VIPs are released first, then every data plane stops accepting and
//   finishes its requests within shutdownTimeout, then health checks stop. Workers
//   ignore the signals a whole process group gets and wait for this order
//   (src/dataplane/worker-entry.ts). A reload under way gives up at its next step, and
//   no data plane is started any more.

import type { BackendState, BoundListener, ToDataPlane } from '../channel/protocol.ts';
import { freezeConfig } from '../config/freeze.ts';
import { diffConfig } from '../config/diff.ts';
import { loadConfigFile } from '../config/load.ts';
import type { Config } from '../config/types.ts';
import { errors, TandemError } from '../errors.ts';
import { EventBus, type ReloadRequest, type TandemEvent } from '../events.ts';
import { liveLabels } from '../dataplane/telemetry.ts';
import { configureLogging, log } from '../log.ts';
import type { Pool } from '../pool/pool.ts';
import type { AdminRuntime, ListenerView, ReloadOutcome, VipStatusView } from '../admin/runtime.ts';
import { DataPlaneSet, RELOAD_TIMEOUT_MS, SNAPSHOT_TIMEOUT_MS, START_TIMEOUT_MS, STOP_GRACE_MS, withTimeout, type DataPlaneSlot, type MessageCounts } from './data-planes.ts';
import { logEvents } from './event-log.ts';
import { launcher as makeLauncher, type Launcher } from './launch.ts';
import type { OperatorSide, PreparedSection } from './operator-side.ts';
import { PortPins } from './port-pins.ts';
import { finished, restartOnly, type ReloadRun } from './reload-scope.ts';
import { RestartBackoff } from './restart-backoff.ts';
import { backendState, ControlPools, sameState } from './pools.ts';

export interface ControlPlaneOptions {
  file: string;
  node: string | null;
  /** Overrides the config's `workers` (0: the data plane runs in this process); null: as configured. */
  workers: number | null;
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
  /** How long the replacement of a worker that died waits. */
  private readonly backoff: RestartBackoff;
  private readonly onEvent: (event: TandemEvent) => void;

  private constructor(config: Config, dataConfig: Config, pins: PortPins, launcher: Launcher, opts: ControlPlaneOptions) {
    this.file = opts.file;
    this.node = opts.node;
    this.bus = new EventBus();
    this.current = config;
    this.dataConfig = dataConfig;
    this.pins = pins;
    this.launcher = launcher;
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
    this.backoff = new RestartBackoff();
    this.planes = new DataPlaneSet(launcher.launch);
    this.onEvent = (event) => {
      if (event.type === 'backend' && !this.applying) this.sendState(event.pool, event.backend);
    };
    this.bus.on('event', this.onEvent);
    this.pools_ = new ControlPools(config, this.bus, this.planes);
    logEvents(this.bus, log, () => this.pools_.pools());
    this.planes.on('ejected', (_slot, pool, backend, reason) => this.syncEjected(pool, backend, reason));
    this.planes.on('stats', () => this.planes.counts.writeBackends(this.pools_.list()));
    this.planes.on('exit', (slot, code, signal) => this.exited(slot, code, signal));
  }

  /** Starts health checks, the data planes (all bound), then the admin API and HA; TandemError on a bad config or a busy port. */
  static async start(opts: ControlPlaneOptions): Promise<ControlPlane> {
    const result = await loadConfigFile(opts.file, { env: process.env, node: opts.node });
    if (!result.ok) throw new TandemError(errors.CONFIG_INVALID, '\n' + result.errors.join('\n'));
    const config = freezeConfig(result.config);
    configureLogging(config.log);
    const pins = new PortPins();
    let resolved;
    try {
      resolved = await pins.resolve(config);
    } catch (err) {
      throw new TandemError(errors.LISTEN, (err as Error).message, { cause: err });
    }
    pins.keep(resolved.pins);
    const workers = opts.workers ?? config.workers;
    const launcher = await makeLauncher(workers === 0, log);
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
    if (plane.observing) {
      try {
        // Loaded here, not at the top: the benchmark's bare data plane runs without it.
        const { OperatorSide } = await import('./operator-side.ts');
        plane.operator = await OperatorSide.start(plane, plane.planes, log);
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
    const { id, pid } = started.slot;
    if (this.launcher.inProcess) log.info({ event: 'worker-start', workerId: id, workerPid: pid, inProcess: true }, `data plane in this process, pid ${pid}`);
    else log.info({ event: 'worker-start', workerId: id, workerPid: pid }, `worker ${id} pid ${pid} started`);
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
    const delay = this.backoff.delay(slot.since);
    const fields = { event: 'worker-exit', workerId: slot.id, workerPid: slot.pid, code, signal, restartInMs: delay };
    log.error(fields, `worker ${slot.id} pid ${slot.pid} exited (${how}); starting a replacement${delay > 0 ? ` in ${delay} ms` : ''}`);
    const replace = () => {
      const started = this.spawn();
      if (started === null) return;
      const { slot: next, ready } = started;
      ready.then(
        (bound) => this.remember(bound),
        (err: Error) => {
          if (!next.exited) log.error({ workerId: next.id, workerPid: next.pid, err: err.message }, `worker ${next.id} could not start: ${err.message}`);
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
      events: this.planes.counts.listenerEvents(l.name),
    }));
  }

  storeStats(): { store: string; stats: Readonly<Record<string, number>> } | null {
    const ha = this.operator?.ha ?? null;
    return ha === null || this.current.ha === null ? null : { store: this.current.ha.store, stats: ha.storeStats() };
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

  /** `host:port` of the admin API, or null without one. */
  adminAddress(): string | null {
    return this.operator?.admin?.address ?? null;
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
    if (this.operator !== null) this.planes.counts.writeCounters(this.operator.counters, liveLabels(this.current));
    this.planes.counts.writeBackends(this.pools_.list());
  }

  /** Every data plane opens its access log file again (logrotate renamed it); `why` starts the line logged. */
  reopenLogs(why: string, quietWithoutFile = false): Promise<void> {
    return this.planes.reopenLogs(why, this.dataConfig.accessLog?.path ?? null, quietWithoutFile, RELOAD_TIMEOUT_MS);
  }

  /** Loads the file again: every data plane swaps to it, or nothing changes; the access log is reopened either way. */
  reload(request: ReloadRequest = { source: 'api' }): Promise<ReloadOutcome> {
    // Reloads queue behind each other: two at once would race on listeners.
    const run = () => this.reloadNow({ ...request, started: performance.now() }).then(async (outcome) => {
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
  private async reloadNow(run: ReloadRun): Promise<ReloadOutcome> {
    if (this.stopping) return this.shuttingDown(run);
    const result = await loadConfigFile(this.file, { env: process.env, node: this.node });
    if (this.stopping) return this.shuttingDown(run);
    if (!result.ok) return this.rejected(run, result.errors);
    const config = freezeConfig(result.config);
    // What a reload cannot apply refuses it whole, rather than being ignored.
    const restart = restartOnly(this.current, config, { workersFixed: this.workersOverride !== null, haRuns: this.observing && this.node !== null });
    if (restart.length > 0) return this.rejected(run, restart);
    let resolved;
    try {
      resolved = await this.pins.resolve(config);
    } catch (err) {
      return this.rejected(run, [`${this.file}: ${(err as Error).message}`]);
    }
    if (this.stopping) return this.shuttingDown(run);
    const dataConfig = freezeConfig(resolved.config);

    // Phase one: every data plane binds the listeners the new config adds.
    const id = this.planes.newId();
    const slots = this.planes.list().filter((s) => s.started && !s.stopping);
    const answers = await Promise.all(slots.map((s) => this.planes.request(s, id, { t: 'prepare', id, config: dataConfig }, RELOAD_TIMEOUT_MS)));
    if (this.stopping) return this.abandon(run, id, null);
    const problems: string[] = [];
    answers.forEach((a, i) => {
      // A data plane that died meanwhile is replaced with whatever config is in force then.
      if (a === null && !slots[i].exited) problems.push(`${this.file}: worker ${slots[i].id} did not answer`);
      else if (a !== null && a.t === 'prepared' && a.error !== null) problems.push(`${this.file}: ${a.error}`);
    });
    if (problems.length > 0) {
      this.planes.broadcast({ t: 'abort', id });
      return this.rejected(run, [...new Set(problems)]);
    }
    // The admin section: a new address is bound now, beside the running one.
    let admin: PreparedSection | null = null;
    try {
      admin = (await this.operator?.prepare(config)) ?? null;
    } catch (err) {
      this.planes.broadcast({ t: 'abort', id });
      return this.rejected(run, [`${this.file}: admin: ${(err as Error).message}; the running admin API is kept`]);
    }
    if (this.stopping) return this.abandon(run, id, admin);

    // Phase two: the control plane's pools and health, then every data plane.
    this.applying = true;
    try {
      await this.pools_.apply(config);
    } finally {
      this.applying = false;
    }
    const changes = diffConfig(this.current, config);
    this.current = config;
    if (this.stopping) return this.abandon(run, id, admin);
    admin?.commit();
    this.pins.keep(resolved.pins);
    this.dataConfig = dataConfig;
    const commit: ToDataPlane = { t: 'commit', id, config: dataConfig, states: this.statesSent() };
    const committing = this.planes.list().filter((s) => s.started);
    const done = await Promise.all(committing.map((s) => this.planes.request(s, id, commit, RELOAD_TIMEOUT_MS)));
    // Data planes that are stopping answer nothing; there is nothing to replace or resize then.
    if (this.stopping) return this.shuttingDown(run);
    done.forEach((a, i) => {
      if (a === null || a.t !== 'committed') return;
      if (a.error === null) this.remember(a.listeners);
      // It could not follow (it started too late to prepare, and its apply failed): a
      // replacement starts from the new config.
      else committing[i].end.kill();
    });
    this.resize();
    this.bus.publish({ type: 'reload', result: 'success', errors: [], ...finished(run), changes });
    // After the reload's own line, which goes out at the level it was asked at.
    configureLogging(config.log);
    return { ok: true, errors: [] };
  }

  /** A stop began during a reload: what was prepared is let go, nothing is committed. */
  private async abandon(run: ReloadRun, id: number, admin: PreparedSection | null): Promise<ReloadOutcome> {
    this.planes.broadcast({ t: 'abort', id });
    await admin?.abort();
    return this.shuttingDown(run);
  }

  private shuttingDown(run: ReloadRun): ReloadOutcome {
    return this.rejected(run, [`${this.file}: shutting down`]);
  }

  private rejected(run: ReloadRun, errs: string[]): ReloadOutcome {
    this.bus.publish({ type: 'reload', result: 'failure', errors: errs, ...finished(run) });
    return { ok: false, errors: errs };
  }

  /** Starts or stops workers when a reload changed `workers` (unless --workers fixed it). */
  private resize(): void {
    if (this.workersOverride !== null) return;
    const wanted = this.current.workers;
    // Only --workers 0 runs the data plane here, and --workers fixes the count (reload-scope.ts).
    if (this.launcher.inProcess || wanted === 0) return;
    const live = this.planes.list().filter((s) => !s.stopping);
    for (let n = live.length; n < wanted; n++) {
      this.spawn()?.ready.then((bound) => this.remember(bound), () => {});
    }
    for (const slot of live.slice(wanted).reverse()) {
      log.info({ event: 'worker-stop', workerId: slot.id, workerPid: slot.pid, workers: wanted }, `worker ${slot.id} pid ${slot.pid} stopping: workers is ${wanted} now`);
      void this.planes.stop(slot, this.current.shutdownTimeout, STOP_GRACE_MS);
    }
  }

  /** Graceful stop: VIPs go first, then data planes finish within `timeout` ms, then checks and the admin API. */
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
    await this.reloading?.then(() => {}, (err: Error) => log.error({ err: err.message }, `reload during stop: ${err.message}`));
    this.bus.off('event', this.onEvent);
    await this.pools_.close();
    await this.operator?.close();
  }
}
