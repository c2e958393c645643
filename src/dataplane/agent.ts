// The data plane's end of the channel: it follows the control plane's messages (start,
// reload in two phases, backend verdicts, stop) and reports what only the data plane
// knows (its passive ejections and its counts). Each kind of message travels one way:
// a verdict from the control plane is applied and not echoed back; an ejection here is
// reported once and not sent back down.

import type { ControlPlaneEnd } from '../channel/ends.ts';
import type { BackendState, BoundListener, CounterSnapshot, DataPlaneStats, ToDataPlane } from '../channel/protocol.ts';
import { freezeConfig } from '../config/freeze.ts';
import type { Config } from '../config/types.ts';
import type { TandemEvent } from '../events.ts';
import { configureLogging, type Logger } from '../log.ts';
import type { Backend } from '../pool/backend.ts';
import { OutlierDetector } from '../pool/health/index.ts';
import { BackendStates } from './backend-states.ts';
import { DataPlane, type PreparedConfig } from './data-plane.ts';
import { DENSE_CODES } from './telemetry.ts';

/** How often a data plane sends its counts unasked, for the status API's totals. */
const PUSH_EVERY_MS = 1000;

/** One data plane as its control plane drives it. */
export class DataPlaneAgent {
  private plane: DataPlane | null;
  private readonly end: ControlPlaneEnd;
  private readonly log: Logger;
  private readonly states: BackendStates;
  private pending: { readonly id: number; readonly prepared: PreparedConfig } | null;
  /** `pool\0backend` of backends this data plane reported as ejected. */
  private readonly ejected: Set<string>;
  /** Messages that change the data plane run one after another, in the order sent. */
  private queue: Promise<void>;
  private timer: NodeJS.Timeout | null;
  private stopping: boolean;
  private readonly onEvent: (event: TandemEvent) => void;

  constructor(end: ControlPlaneEnd, log: Logger) {
    this.plane = null;
    this.end = end;
    this.log = log;
    this.states = new BackendStates();
    this.pending = null;
    this.ejected = new Set();
    this.queue = Promise.resolve();
    this.timer = null;
    this.stopping = false;
    this.onEvent = (event) => {
      if (event.type === 'backend') this.reportEjection(event.pool, event.backend, event.reason);
    };
    end.onMessage((msg) => this.handle(msg));
  }

  /** Says the data plane listens now; the control plane answers with `start`. */
  hello(): void {
    this.end.send({ t: 'hello' });
  }

  private handle(msg: ToDataPlane): void {
    switch (msg.t) {
      // Verdicts and counts are answered at once, even while a reload is being prepared.
      case 'state': this.applyState(msg.state); return;
      case 'reinstate': this.reinstate(msg.pool, msg.backend, msg.age); return;
      case 'snapshot': this.end.send({ t: 'stats', id: msg.id, stats: this.stats() }); return;
      case 'vacate': void this.vacated(msg.id, msg.address, (p) => p.vacate(msg.address, msg.leaving, msg.wait)); return;
      case 'linger': void this.vacated(msg.id, msg.address, (p) => p.linger(msg.address, msg.wait)); return;
      case 'reopen': void this.reopenLogs().then((error) => this.end.send({ t: 'reopened', id: msg.id, error })); return;
      case 'stop': void this.stop(msg.timeout, 0); return;
      default:
        this.queue = this.queue.then(() => this.run(msg)).catch((err: Error) => this.log.error({ message: msg.t, err }, `${msg.t}: ${err.message}`));
    }
  }

  private async run(msg: ToDataPlane): Promise<void> {
    if (this.stopping) return;
    switch (msg.t) {
      case 'start': return this.start(freezeConfig(msg.config), msg.states, msg.count);
      case 'prepare': {
        try {
          this.pending = { id: msg.id, prepared: await this.plane!.prepare(freezeConfig(msg.config)) };
          this.end.send({ t: 'prepared', id: msg.id, error: null });
        } catch (err) {
          this.pending = null;
          this.end.send({ t: 'prepared', id: msg.id, error: (err as Error).message });
        }
        return;
      }
      case 'abort': {
        const p = this.pending;
        this.pending = null;
        if (p !== null && p.id === msg.id) await this.plane!.abort(p.prepared);
        return;
      }
      case 'commit': {
        configureLogging(msg.config.log);
        for (const s of msg.states) this.states.set(s);
        const p = this.pending;
        this.pending = null;
        let error: string | null = null;
        try {
          // A data plane started after `prepare` was sent has nothing prepared: it applies in one go.
          if (p !== null && p.id === msg.id) await this.plane!.commit(p.prepared);
          else await this.plane!.apply(freezeConfig(msg.config));
        } catch (err) {
          error = (err as Error).message;
          this.log.error({ err: error }, `could not apply the reloaded config: ${error}`);
        }
        this.syncEjections();
        this.end.send({ t: 'committed', id: msg.id, error, listeners: this.bound() });
        return;
      }
    }
  }

  private async start(config: Config, states: readonly BackendState[], count: boolean): Promise<void> {
    // The control plane's level (with --log-level applied) and format, in this process too.
    configureLogging(config.log);
    for (const s of states) this.states.set(s);
    const plane = new DataPlane(config, this.states, count, this.log);
    try {
      await plane.listen();
    } catch (err) {
      await plane.close(0);
      const e = err as Error & { code?: string };
      this.end.send({ t: 'failed', code: e.code ?? 'TANDEM_ERR_LISTEN', message: e.message }, () => this.end.exit(2));
      return;
    }
    this.plane = plane;
    // Verdicts that arrived while the listeners were being bound.
    for (const b of plane.backends()) {
      const s = this.states.get(b.pool, b.name);
      if (s !== undefined) BackendStates.apply(b, s, undefined);
    }
    plane.bus.on('event', this.onEvent);
    this.timer = setInterval(() => this.end.send({ t: 'stats', id: 0, stats: this.stats() }), PUSH_EVERY_MS);
    this.timer.unref();
    const bound = this.bound();
    const engines = Object.fromEntries(plane.listeners().map((l) => [l.config.name, l.config.engine]));
    this.log.info(
      { event: 'serving', listeners: Object.fromEntries(bound.map((l) => [l.name, l.address])), engines },
      `data plane serving: ${bound.map((l) => `${l.name} on ${l.address} (${engines[l.name]} engine)`).join(', ')}`,
    );
    this.end.send({ t: 'ready', listeners: bound });
  }

  /**
   * Opens the access log again, at once rather than after a reload under way (which
   * reopens it or opens another). Also what a worker does on its own SIGUSR1, which
   * `systemctl kill --signal=USR1` sends to every process of the unit.
   */
  reopenLogs(): Promise<string | null> {
    return this.plane?.reopenLogs() ?? Promise.resolve(null);
  }

  private bound(): BoundListener[] {
    return this.plane === null ? [] : this.plane.listeners().map((l) => ({ name: l.config.name, address: l.address() }));
  }

  private backend(pool: string, name: string): Backend | undefined {
    return this.plane?.generation.pools.get(pool)?.pool.byName.get(name);
  }

  private applyState(state: BackendState): void {
    const previous = this.states.set(state);
    const b = this.backend(state.pool, state.backend);
    if (b !== undefined) BackendStates.apply(b, state, previous);
  }

  private reinstate(pool: string, name: string, age: number): void {
    const outlier = this.plane?.generation.pools.get(pool)?.outlier;
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
    this.end.send({ t: 'ejected', pool, backend: name, ejected: b.ejected, reason });
  }

  /** After a reload, backends may have gone or changed: report what differs. */
  private syncEjections(): void {
    const seen = new Set<string>();
    for (const b of this.plane!.backends()) {
      seen.add(`${b.pool}\u0000${b.name}`);
      this.reportEjection(b.pool, b.name, 'reload');
    }
    for (const key of [...this.ejected]) {
      if (seen.has(key)) continue;
      this.ejected.delete(key);
      const [pool, backend] = key.split('\u0000');
      this.end.send({ t: 'ejected', pool, backend, ejected: false, reason: 'removed by reload' });
    }
  }

  /** Runs a wind-down step for a VIP's `address` and answers `vacated` with what it left open, whatever happens. */
  private async vacated(id: number, address: string, step: (plane: DataPlane) => Promise<number>): Promise<void> {
    const open = this.plane === null ? 0 : await step(this.plane).catch((err: Error) => {
      this.log.error({ address, err: err.message }, `winding down the connections on ${address} failed: ${err.message}`);
      return 0;
    });
    this.end.send({ t: 'vacated', id, open });
  }

  /** What this data plane has counted so far. Runs once a second at most: allocation here is fine. */
  private stats(): DataPlaneStats {
    const plane = this.plane;
    if (plane === null) return { counters: [], backends: [], listeners: [], upgrades: [], rejected: [], listenerEvents: [] };
    const counters: CounterSnapshot[] = [];
    for (const c of plane.counters.values()) {
      const codes: number[] = [];
      for (let code = 0; code < DENSE_CODES; code++) if (c.codes[code] !== 0) codes.push(code, c.codes[code]);
      if (c.rareCodes !== null) for (const [code, n] of c.rareCodes) codes.push(code, n);
      const errors: (string | number)[] = [];
      if (c.errors !== null) for (const [code, n] of c.errors) errors.push(code, n);
      counters.push({ listener: c.listener, route: c.route, pool: c.pool, backend: c.backend, codes,
        buckets: c.buckets.slice(), upstream: c.upstream.slice(), sums: c.sums.slice(), errors });
    }
    const upgrades: [string, string, string, string, number][] = [];
    for (const [key, n] of plane.counters.upgrades) {
      const [listener, route, pool, result] = key.split('\u0000');
      upgrades.push([listener, route, pool, result, n]);
    }
    const rejected: [string, string, number][] = [];
    for (const [key, n] of plane.counters.rejected) {
      const sep = key.indexOf('\u0000');
      rejected.push([key.slice(0, sep), key.slice(sep + 1), n]);
    }
    const backends: [string, string, number, number, number][] = [];
    for (const b of plane.backends()) backends.push([b.pool, b.name, b.active, b.requests, b.failures]);
    const listenerEvents: [string, string, number][] = [];
    for (const l of plane.listeners()) {
      if (l.refused > 0) listenerEvents.push([l.config.name, 'refused', l.refused]);
      if (l.front !== null && l.front.parked > 0) listenerEvents.push([l.config.name, 'parked', l.front.parked]);
      for (const [reason, n] of Object.entries(l.http2?.counters.closed ?? {})) if (n > 0) listenerEvents.push([l.config.name, `http2-${reason}`, n]);
    }
    return { counters, backends, listeners: plane.listeners().map((l) => [l.config.name, l.connections.size] as const), upgrades, rejected, listenerEvents };
  }

  /**
   * Stops accepting, lets requests in flight finish for up to `timeout` ms (null: the
   * config's shutdownTimeout), sends the final counts (so the control plane's totals
   * include every request) and ends.
   */
  async stop(timeout: number | null, code: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.timer !== null) clearInterval(this.timer);
    const plane = this.plane;
    if (plane === null) {
      this.end.exit(code);
      return;
    }
    await this.queue;
    // A reload prepared but not committed (the stop overtook it) has listeners bound:
    // let them go before the drain, or they would take connections nobody serves.
    const p = this.pending;
    this.pending = null;
    if (p !== null) await plane.abort(p.prepared).catch((err: Error) => this.log.error({ err }, `stop: ${err.message}`));
    plane.bus.off('event', this.onEvent);
    const started = performance.now();
    await plane.close(timeout ?? plane.config().shutdownTimeout).catch((err: Error) => this.log.error({ err }, `stop: ${err.message}`));
    this.log.info({ event: 'drained', durationMs: Math.round(performance.now() - started) }, 'data plane stopped: listeners closed, requests in flight done');
    this.end.send({ t: 'stats', id: 0, stats: this.stats() }, () => this.end.exit(code));
    // The channel may be gone (the control plane died): do not wait for the send forever.
    setTimeout(() => this.end.exit(code), 1000).unref();
  }
}
