// The control plane's side of its data planes: starting them (through a launcher that
// forks a worker process or starts one in this process), the request/answer exchanges
// over the channel, and their counts and ejection reports. Decisions (when to replace
// a data plane, what a reload does) belong to ControlPlane.

import { EventEmitter } from 'node:events';
import type { DataPlaneEnd } from '../channel/ends.ts';
import type { BoundListener, ToControlPlane, ToDataPlane } from '../channel/protocol.ts';
import type { Backend } from '../pool/backend.ts';
import type { Reinstater } from '../pool/health/active.ts';
import { log } from '../log.ts';
import { DataPlaneCounts } from './counts.ts';

/** How long a data plane may take to bind its listeners at start. */
export const START_TIMEOUT_MS = 30_000;
/** How long a data plane may take to answer a reload's prepare or commit. */
export const RELOAD_TIMEOUT_MS = 10_000;
/** How long a scrape waits for a data plane's counts before using its last ones. */
export const SNAPSHOT_TIMEOUT_MS = 1000;
/** Kill a stopping data plane this long after its shutdown timeout. */
export const STOP_GRACE_MS = 2000;
/** How long past its wait a data plane may take to answer a vacate. */
const VACATE_ANSWER_MS = 1000;

/** One data plane as the control plane tracks it. */
export class DataPlaneSlot {
  readonly end: DataPlaneEnd;
  readonly id: number;
  readonly pid: number;
  /** performance.now() at start. */
  readonly since: number;
  /** `start` was sent: every later message reaches it in order. */
  started: boolean;
  /** Its listeners are bound. */
  ready: boolean;
  /** Asked to stop: its exit is no crash. */
  stopping: boolean;
  exited: boolean;
  /** `pool\0backend` it has ejected. */
  readonly ejected: Set<string>;
  /** Requests waiting for an answer, by id; called with null when it exits. */
  readonly waiting: Map<number, (msg: ToControlPlane | null) => void>;
  /** Resolves once it exits. */
  readonly exit: Promise<void>;
  private readonly sent: (msg: ToDataPlane) => void;

  constructor(end: DataPlaneEnd, sent: (msg: ToDataPlane) => void) {
    this.end = end;
    this.id = end.id;
    this.pid = end.pid;
    this.since = performance.now();
    this.started = false;
    this.ready = false;
    this.stopping = false;
    this.exited = false;
    this.ejected = new Set();
    this.waiting = new Map();
    this.sent = sent;
    this.exit = new Promise((resolve) => end.once('exit', () => resolve()));
  }

  send(msg: ToDataPlane): void {
    if (this.exited) return;
    this.sent(msg);
    this.end.send(msg);
  }
}

interface DataPlaneSetEvents {
  /** A data plane's passive ejection of a backend changed. */
  ejected: [slot: DataPlaneSlot, pool: string, backend: string, reason: string];
  /** A data plane sent counts. */
  stats: [slot: DataPlaneSlot];
  /** A data plane exited; its counts are retired and its ejections dropped. */
  exit: [slot: DataPlaneSlot, code: number | null, signal: string | null];
}

/** Messages by type, each way, since the control plane started; `tandem_channel_messages_total` shows them. */
export interface MessageCounts {
  readonly down: Map<string, number>;
  readonly up: Map<string, number>;
}

/** The data planes of a control plane. */
export class DataPlaneSet extends EventEmitter<DataPlaneSetEvents> implements Reinstater {
  readonly counts: DataPlaneCounts;
  readonly messages: MessageCounts;
  private readonly slots: Map<number, DataPlaneSlot>;
  private readonly launch: () => DataPlaneEnd;
  private nextId: number;

  /** `launch` starts one data plane and returns the control plane's end of its channel. */
  constructor(launch: () => DataPlaneEnd) {
    super();
    this.launch = launch;
    this.counts = new DataPlaneCounts();
    this.messages = { down: new Map(), up: new Map() };
    this.slots = new Map();
    this.nextId = 1;
  }

  /**
   * Starts a data plane. `start` is called when it is ready for messages, so that it
   * starts from the config and backend states of that moment. Resolves with the bound
   * listeners, or rejects with its reason when it cannot bind them.
   */
  spawn(start: () => ToDataPlane): { slot: DataPlaneSlot; ready: Promise<readonly BoundListener[]> } {
    const down = this.messages.down;
    const slot = new DataPlaneSlot(this.launch(), (msg) => down.set(msg.t, (down.get(msg.t) ?? 0) + 1));
    this.slots.set(slot.id, slot);
    const ready = new Promise<readonly BoundListener[]>((resolve, reject) => {
      slot.end.on('message', (msg) => {
        this.messages.up.set(msg.t, (this.messages.up.get(msg.t) ?? 0) + 1);
        switch (msg.t) {
          case 'hello':
            slot.started = true;
            slot.send(start());
            return;
          case 'ready':
            slot.ready = true;
            resolve(msg.listeners);
            return;
          case 'failed':
            reject(Object.assign(new Error(msg.message), { code: msg.code }));
            return;
          default:
            this.received(slot, msg);
        }
      });
      slot.end.once('exit', (code, signal) => {
        slot.exited = true;
        slot.ready = false;
        this.slots.delete(slot.id);
        this.counts.retire(slot.id);
        for (const answer of slot.waiting.values()) answer(null);
        slot.waiting.clear();
        reject(new Error(`worker ${slot.id} exited (${signal ?? `code ${code}`}) before it was ready`));
        this.emit('exit', slot, code, signal);
      });
    });
    // Nobody may wait for `ready` (a replacement): its rejection is not an error then.
    ready.catch(() => {});
    return { slot, ready };
  }

  private received(slot: DataPlaneSlot, msg: ToControlPlane): void {
    if (msg.t === 'stats') {
      this.counts.update(slot.id, msg.stats);
      this.emit('stats', slot);
    } else if (msg.t === 'ejected') {
      const key = `${msg.pool}\u0000${msg.backend}`;
      if (msg.ejected) slot.ejected.add(key);
      else slot.ejected.delete(key);
      this.emit('ejected', slot, msg.pool, msg.backend, msg.reason);
    }
    if ('id' in msg && msg.id !== 0) {
      const answer = slot.waiting.get(msg.id);
      if (answer !== undefined) {
        slot.waiting.delete(msg.id);
        answer(msg);
      }
    }
  }

  /** A fresh id for a request, or for a reload whose prepare and commit share it. */
  newId(): number {
    return this.nextId++;
  }

  /** Sends `msg` and resolves with the answer carrying the same id; null after `timeout` ms or when the data plane exits. */
  request(slot: DataPlaneSlot, id: number, msg: ToDataPlane, timeout: number): Promise<ToControlPlane | null> {
    if (slot.exited) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        slot.waiting.delete(id);
        resolve(null);
      }, timeout);
      slot.waiting.set(id, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      slot.send(msg);
    });
  }

  /**
   * Tells every data plane that the VIP at `address` is about to move away (or not any
   * more); resolves with the connections on it still open after `wait` ms, over all.
   */
  vacate(address: string, leaving: boolean, wait: number): Promise<number> {
    return this.vacated((id) => ({ t: 'vacate', id, address, leaving, wait }), wait);
  }

  /**
   * Tells every data plane that the VIP at `address` has a new holder that serves;
   * resolves once none has a request on it awaiting its answer (at most `wait` ms), with
   * how many still had, over all.
   */
  linger(address: string, wait: number): Promise<number> {
    return this.vacated((id) => ({ t: 'linger', id, address, wait }), wait);
  }

  /** Sends every started data plane the message `ask` makes; the sum of their `vacated` answers. */
  private async vacated(ask: (id: number) => ToDataPlane, wait: number): Promise<number> {
    const asked = this.list().filter((s) => s.started).map((slot) => {
      const id = this.newId();
      return this.request(slot, id, ask(id), wait + VACATE_ANSWER_MS);
    });
    let open = 0;
    for (const answer of await Promise.all(asked)) if (answer?.t === 'vacated') open += answer.open;
    return open;
  }

  /** Asks every started data plane to open its access log `file` again, and logs the outcome; `why` starts the line. */
  async reopenLogs(why: string, file: string | null, quietWithoutFile: boolean, timeout: number): Promise<void> {
    if (file === null || file === 'stdout') {
      if (!quietWithoutFile) log.info({ event: 'access-log-reopen', reason: why }, `${why}: no access log file to reopen`);
      return;
    }
    const id = this.newId();
    const slots = this.list().filter((s) => s.started && !s.stopping);
    const answers = await Promise.all(slots.map((s) => this.request(s, id, { t: 'reopen', id }, timeout)));
    const problems = new Set<string>();
    answers.forEach((a, i) => {
      if (a === null && !slots[i].exited) problems.add(`worker ${slots[i].id} did not answer`);
      else if (a !== null && a.t === 'reopened' && a.error !== null) problems.add(a.error);
    });
    if (problems.size === 0) log.info({ event: 'access-log-reopen', reason: why, file }, `${why}: access log ${file} reopened`);
    else log.warn({ event: 'access-log-reopen', reason: why, file, problems: [...problems] }, `${why}: access log ${file} not reopened everywhere: ${[...problems].join('; ')}`);
  }

  /** Sends `msg` to every data plane that has been started. */
  broadcast(msg: ToDataPlane): void {
    for (const s of this.slots.values()) if (s.started) s.send(msg);
  }

  /** Live data planes, oldest first. */
  list(): DataPlaneSlot[] {
    return [...this.slots.values()];
  }

  /** True when some live data plane has the backend ejected. */
  anyEjected(pool: string, backend: string): boolean {
    const key = `${pool}\u0000${backend}`;
    for (const s of this.slots.values()) if (s.ejected.has(key)) return true;
    return false;
  }

  /** True when some data plane has its listeners bound. */
  anyReady(): boolean {
    for (const s of this.slots.values()) if (s.ready && !s.stopping) return true;
    return false;
  }

  /** An active check passed for an ejected backend: the data planes may end their ejections. */
  reinstate(backend: Backend, checkStarted: number): void {
    this.broadcast({ t: 'reinstate', pool: backend.pool, backend: backend.name, age: performance.now() - checkStarted });
  }

  /**
   * Asks a data plane to stop accepting and finish its requests within `timeout` ms;
   * kills it when it has not exited `grace` ms after that.
   */
  async stop(slot: DataPlaneSlot, timeout: number, grace: number): Promise<void> {
    slot.stopping = true;
    if (slot.exited) return;
    if (slot.started) slot.send({ t: 'stop', timeout });
    else slot.end.kill();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        slot.end.kill();
        resolve();
      }, timeout + grace);
    });
    await Promise.race([slot.exit, late]);
    clearTimeout(timer);
    await slot.exit;
  }
}

/** `p`, or a rejection with `message` after `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
