// A cluster worker: the data plane only. It binds the listeners (node:cluster shares
// them with the other workers through the primary), builds pools and generations as
// an in-process Instance does, and applies the primary's health verdicts instead of
// checking backends itself. Passive outlier detection stays here, since only the
// worker sees its requests fail; ejections are reported up for the status API.
// Nothing here loads fastify or prom-client: a worker has to stay small.

import cluster from 'node:cluster';
import { RequestCounters } from '../dataplane/telemetry.ts';
import type { Config } from '../config/types.ts';
import type { TandemEvent } from '../events.ts';
import { Instance, type PreparedConfig } from '../main.ts';
import { OutlierDetector } from '../pool/health/index.ts';
import type { Backend } from '../pool/backend.ts';
import { BackendStates, workerHealth } from './health.ts';
import { isToWorker, type BackendState, type BoundListener, type FromWorker, type ToWorker } from './protocol.ts';
import { takeStats } from './stats.ts';

/** How often a worker sends its counts unasked, for the status API's totals. */
const PUSH_EVERY_MS = 1000;

/** One worker process's runtime; driven by the primary's messages. */
export class ClusterWorker {
  readonly id: number;
  private instance: Instance | null;
  private readonly counters: RequestCounters;
  private readonly states: BackendStates;
  private pending: { readonly id: number; readonly prepared: PreparedConfig } | null;
  /** `pool\0backend` of backends this worker reported as ejected. */
  private readonly ejected: Set<string>;
  /** Messages that change the instance run one after another, in the order sent. */
  private queue: Promise<void>;
  private timer: NodeJS.Timeout | null;
  private stopping: boolean;
  private readonly onEvent: (event: TandemEvent) => void;

  constructor(id: number) {
    this.id = id;
    this.instance = null;
    this.counters = new RequestCounters();
    this.states = new BackendStates();
    this.pending = null;
    this.ejected = new Set();
    this.queue = Promise.resolve();
    this.timer = null;
    this.stopping = false;
    this.onEvent = (event) => {
      if (event.type === 'backend') this.reportEjection(event.pool, event.backend, event.reason);
    };
  }

  /** Lines for operators on stderr, marked with the worker's id. */
  log(msg: string): void {
    process.stderr.write(`${new Date().toISOString()} tandem worker ${this.id}: ${msg}\n`);
  }

  hello(): void {
    this.send({ t: 'hello' });
  }

  handle(msg: ToWorker): void {
    switch (msg.t) {
      // Verdicts and counts are answered at once, even while a reload is being prepared.
      case 'state': this.applyState(msg.state); return;
      case 'reinstate': this.reinstate(msg.pool, msg.backend, msg.age); return;
      case 'snapshot': this.send({ t: 'stats', id: msg.id, stats: this.stats() }); return;
      case 'stop': void this.stop(msg.timeout, 0); return;
      default: this.enqueue(msg);
    }
  }

  private enqueue(msg: ToWorker): void {
    this.queue = this.queue.then(() => this.run(msg)).catch((err: Error) => this.log(`${msg.t}: ${err.stack ?? err.message}`));
  }

  private async run(msg: ToWorker): Promise<void> {
    if (this.stopping) return;
    switch (msg.t) {
      case 'start': return this.start(msg.config, msg.states);
      case 'prepare': {
        const instance = this.instance!;
        try {
          this.pending = { id: msg.id, prepared: await instance.prepare(msg.config) };
          this.send({ t: 'prepared', id: msg.id, error: null });
        } catch (err) {
          this.pending = null;
          this.send({ t: 'prepared', id: msg.id, error: (err as Error).message });
        }
        return;
      }
      case 'abort': {
        const p = this.pending;
        this.pending = null;
        if (p !== null && p.id === msg.id) await this.instance!.abort(p.prepared);
        return;
      }
      case 'commit': {
        const instance = this.instance!;
        for (const s of msg.states) this.states.set(s);
        const p = this.pending;
        this.pending = null;
        let error: string | null = null;
        try {
          // A worker started after the primary sent `prepare` has nothing prepared: it applies in one go.
          if (p !== null && p.id === msg.id) await instance.commit(p.prepared);
          else await instance.apply(msg.config);
        } catch (err) {
          error = (err as Error).message;
          this.log(`could not apply the reloaded config: ${error}`);
        }
        this.syncEjections();
        this.send({ t: 'committed', id: msg.id, error, listeners: this.bound() });
        return;
      }
    }
  }

  private async start(config: Config, states: readonly BackendState[]): Promise<void> {
    for (const s of states) this.states.set(s);
    try {
      this.instance = await Instance.fromConfig(config, {
        file: config.file,
        node: null,
        metrics: this.counters,
        log: (m) => this.log(m),
        health: workerHealth(this.states),
        // Each worker binds its own socket: see src/cluster/ports.ts for why not node:cluster's.
        reusePort: true,
      });
    } catch (err) {
      const e = err as Error & { code?: string };
      this.send({ t: 'failed', code: e.code ?? 'TANDEM_ERR_LISTEN', message: e.message }, () => process.exit(2));
      return;
    }
    // Verdicts that arrived while the listeners were being bound.
    this.applyAll();
    this.instance.bus.on('event', this.onEvent);
    this.timer = setInterval(() => this.send({ t: 'stats', id: 0, stats: this.stats() }), PUSH_EVERY_MS);
    this.timer.unref();
    this.send({ t: 'ready', listeners: this.bound() });
  }

  private bound(): BoundListener[] {
    return this.instance === null ? [] : this.instance.listeners().map((l) => ({ name: l.name, address: l.address }));
  }

  private backend(pool: string, name: string): Backend | undefined {
    return this.instance?.generation.pools.get(pool)?.pool.byName.get(name);
  }

  private applyState(state: BackendState): void {
    const previous = this.states.set(state);
    const b = this.backend(state.pool, state.backend);
    if (b !== undefined) BackendStates.apply(b, state, previous);
  }

  private applyAll(): void {
    for (const rt of this.instance!.generation.pools.values()) {
      for (const b of rt.pool.backends) {
        const s = this.states.get(rt.name, b.name);
        if (s !== undefined) BackendStates.apply(b, s, undefined);
      }
    }
  }

  private reinstate(pool: string, name: string, age: number): void {
    const outlier = this.instance?.generation.pools.get(pool)?.outlier;
    const b = this.backend(pool, name);
    if (b !== undefined && outlier instanceof OutlierDetector) outlier.reinstate(b, performance.now() - age);
  }

  private reportEjection(pool: string, name: string, reason: string): void {
    const b = this.backend(pool, name);
    if (b === undefined) return;
    const key = `${pool}\u0000${name}`;
    if (b.ejected === this.ejected.has(key)) return;
    if (b.ejected) this.ejected.add(key);
    else this.ejected.delete(key);
    this.send({ t: 'ejected', pool, backend: name, ejected: b.ejected, reason });
  }

  /** After a reload, backends may have gone or changed: report what differs. */
  private syncEjections(): void {
    const seen = new Set<string>();
    for (const rt of this.instance!.generation.pools.values()) {
      for (const b of rt.pool.backends) {
        seen.add(`${rt.name}\u0000${b.name}`);
        this.reportEjection(rt.name, b.name, 'reload');
      }
    }
    for (const key of [...this.ejected]) {
      if (seen.has(key)) continue;
      this.ejected.delete(key);
      const [pool, backend] = key.split('\u0000');
      this.send({ t: 'ejected', pool, backend, ejected: false, reason: 'removed by reload' });
    }
  }

  private stats() {
    const instance = this.instance;
    if (instance === null) return { counters: [], backends: [], listeners: [] };
    return takeStats(this.counters, Array.from(instance.generation.pools.values(), (rt) => rt.pool), instance.listeners());
  }

  /**
   * Stops accepting, lets requests in flight finish for up to `timeout` ms, sends the
   * final counts (so the primary's totals include every request) and exits.
   */
  async stop(timeout: number | null, code: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.timer !== null) clearInterval(this.timer);
    const instance = this.instance;
    if (instance !== null) {
      await this.queue;
      // A reload prepared but not committed (the stop overtook it) has listeners bound:
      // let them go before the drain, or they would take connections nobody serves.
      const p = this.pending;
      this.pending = null;
      if (p !== null) await instance.abort(p.prepared).catch((err: Error) => this.log(`stop: ${err.message}`));
      await instance.close(timeout ?? instance.config().shutdownTimeout).catch((err: Error) => this.log(`stop: ${err.message}`));
      this.send({ t: 'stats', id: 0, stats: this.stats() }, () => process.exit(code));
      // The channel may be gone (the primary died): do not wait for the send forever.
      setTimeout(() => process.exit(code), 1000).unref();
    } else {
      process.exit(code);
    }
  }

  private send(msg: FromWorker, done?: () => void): void {
    if (process.send === undefined || !process.connected) {
      done?.();
      return;
    }
    process.send(msg, undefined, {}, (err) => {
      if (err !== null && err !== undefined && !this.stopping) this.log(`message to the primary failed: ${err.message}`);
      done?.();
    });
  }
}

/** Entry of a worker process: follows the primary's messages until told to stop. */
export function runWorker(): void {
  const worker = new ClusterWorker(cluster.worker?.id ?? 0);
  // Signals. `systemctl stop` (KillMode=control-group, the default), Ctrl-C, a terminal
  // hang-up and `docker stop` under an init that forwards to the group signal every
  // process, workers included. A worker that stopped on its own would stop accepting
  // while the primary is still handing the VIPs over (up to lease + hookTimeout), and
  // connections would be refused. So while the primary is there, workers ignore
  // SIGTERM, SIGINT and SIGHUP and wait for its `stop`, which comes after the VIPs are
  // released. KillMode=mixed is not needed (it would SIGTERM only the primary, which
  // does the same), and systemd's final SIGKILL after TimeoutStopSec still ends
  // everything. To stop one worker, SIGKILL it: the primary starts a replacement.
  const onSignal = () => {
    if (!process.connected) void worker.stop(null, 0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('SIGHUP', onSignal);
  // The primary is gone: nobody will check health or replace us, and nobody will send
  // `stop`. Finish the requests in flight and exit. node:cluster would exit at once on
  // an unasked disconnect, cutting those requests, unless exitedAfterDisconnect is set.
  if (cluster.worker !== undefined) cluster.worker.exitedAfterDisconnect = true;
  process.on('disconnect', () => void worker.stop(null, 0));
  process.on('message', (msg: unknown) => {
    if (isToWorker(msg)) worker.handle(msg);
  });
  // Messages sent before this listener existed would have been dropped: ask for `start` now.
  worker.hello();
}
