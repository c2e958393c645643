// The primary's side of the worker processes: forking them, the request/answer
// exchanges over IPC, and their counts and ejection reports. Decisions (when to
// replace a worker, what a reload does) belong to ClusterPrimary.

import cluster, { type Worker } from 'node:cluster';
import { EventEmitter } from 'node:events';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../pool/backend.ts';
import type { Reinstater } from '../pool/health/active.ts';
import { isFromWorker, type BoundListener, type FromWorker, type ToWorker } from './protocol.ts';
import { ClusterStats } from './stats.ts';

// worker-entry.ts in the source tree, worker-entry.js in the compiled package (dist/).
const WORKER_ENTRY = fileURLToPath(new URL(`./worker-entry${extname(import.meta.url)}`, import.meta.url));

/** One worker process as the primary tracks it. */
export class WorkerSlot {
  readonly worker: Worker;
  readonly id: number;
  readonly pid: number;
  /** performance.now() at fork. */
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
  /** Requests waiting for an answer, by id; called with null when the worker exits. */
  readonly waiting: Map<number, (msg: FromWorker | null) => void>;
  /** Resolves once it exits. */
  readonly exit: Promise<void>;

  constructor(worker: Worker) {
    this.worker = worker;
    this.id = worker.id;
    this.pid = worker.process.pid ?? 0;
    this.since = performance.now();
    this.started = false;
    this.ready = false;
    this.stopping = false;
    this.exited = false;
    this.ejected = new Set();
    this.waiting = new Map();
    this.exit = new Promise((resolve) => worker.once('exit', () => resolve()));
  }

  send(msg: ToWorker): void {
    if (this.exited || !this.worker.isConnected()) return;
    this.worker.send(msg);
  }
}

interface WorkerSetEvents {
  /** A worker's passive ejection of a backend changed. */
  ejected: [slot: WorkerSlot, pool: string, backend: string, reason: string];
  /** A worker sent counts. */
  stats: [slot: WorkerSlot];
  /** A worker exited; its counts are retired and its ejections dropped. */
  exit: [slot: WorkerSlot, code: number | null, signal: string | null];
}

/** The worker processes of a primary. */
export class WorkerSet extends EventEmitter<WorkerSetEvents> implements Reinstater {
  readonly stats: ClusterStats;
  private readonly slots: Map<number, WorkerSlot>;
  private readonly env: Record<string, string>;
  private nextId: number;

  /** `execArgv` and `env` (added to the primary's environment) are for every worker. */
  constructor(execArgv: readonly string[], env: Record<string, string>) {
    super();
    this.env = env;
    this.stats = new ClusterStats();
    this.slots = new Map();
    this.nextId = 1;
    // Advanced serialization: the compiled Config (with its Map) and typed arrays cross whole.
    cluster.setupPrimary({ exec: WORKER_ENTRY, execArgv: [...execArgv], serialization: 'advanced' });
  }

  /**
   * Forks a worker. `start` is called when the worker is ready for messages, so that it
   * starts from the config and backend states of that moment. Resolves with the bound
   * listeners, or rejects with the worker's reason when it cannot bind them.
   */
  spawn(start: () => ToWorker): { slot: WorkerSlot; ready: Promise<readonly BoundListener[]> } {
    const slot = new WorkerSlot(cluster.fork(this.env));
    this.slots.set(slot.id, slot);
    const ready = new Promise<readonly BoundListener[]>((resolve, reject) => {
      slot.worker.on('message', (msg: unknown) => {
        if (!isFromWorker(msg)) return;
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
      slot.worker.once('exit', (code, signal) => {
        slot.exited = true;
        slot.ready = false;
        this.slots.delete(slot.id);
        this.stats.retire(slot.id);
        for (const answer of slot.waiting.values()) answer(null);
        slot.waiting.clear();
        reject(new Error(`worker ${slot.id} exited (${signal ?? `code ${code}`}) before it was ready`));
        this.emit('exit', slot, code, signal);
      });
    });
    // A send racing the worker's death reports here; its exit is handled above.
    slot.worker.on('error', () => {});
    // Nobody may wait for `ready` (a replacement): its rejection is not an error then.
    ready.catch(() => {});
    return { slot, ready };
  }

  private received(slot: WorkerSlot, msg: FromWorker): void {
    if (msg.t === 'stats') {
      this.stats.update(slot.id, msg.stats);
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

  /** Sends `msg` and resolves with the answer carrying the same id; null after `timeout` ms or when the worker exits. */
  request(slot: WorkerSlot, id: number, msg: ToWorker, timeout: number): Promise<FromWorker | null> {
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

  /** Sends `msg` to every worker that has been started. */
  broadcast(msg: ToWorker): void {
    for (const s of this.slots.values()) if (s.started) s.send(msg);
  }

  /** Live workers, oldest first. */
  list(): WorkerSlot[] {
    return [...this.slots.values()];
  }

  /** True when some live worker has the backend ejected. */
  anyEjected(pool: string, backend: string): boolean {
    const key = `${pool}\u0000${backend}`;
    for (const s of this.slots.values()) if (s.ejected.has(key)) return true;
    return false;
  }

  /** True when some worker has its listeners bound. */
  anyReady(): boolean {
    for (const s of this.slots.values()) if (s.ready && !s.stopping) return true;
    return false;
  }

  /** An active check in the primary passed for an ejected backend: the workers may end their ejections. */
  reinstate(backend: Backend, checkStarted: number): void {
    this.broadcast({ t: 'reinstate', pool: backend.pool, backend: backend.name, age: performance.now() - checkStarted });
  }

  /**
   * Asks a worker to stop accepting and finish its requests within `timeout` ms; kills
   * it when it has not exited `grace` ms after that.
   */
  async stop(slot: WorkerSlot, timeout: number, grace: number): Promise<void> {
    slot.stopping = true;
    if (slot.exited) return;
    if (slot.started) slot.send({ t: 'stop', timeout });
    else slot.worker.process.kill('SIGKILL');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        slot.worker.process.kill('SIGKILL');
        resolve();
      }, timeout + grace);
    });
    await Promise.race([slot.exit, late]);
    clearTimeout(timer);
    await slot.exit;
  }
}
