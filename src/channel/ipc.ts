// The channel between processes: node:cluster's IPC with structured-clone
// serialization. The control plane forks a worker process per data plane; the worker
// runs src/dataplane/worker-entry.ts.

import cluster, { type Worker } from 'node:cluster';
import { EventEmitter } from 'node:events';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../log.ts';
import type { ControlPlaneEnd, DataPlaneEnd, DataPlaneEndEvents } from './ends.ts';
import { isProtocolMessage, type ToControlPlane, type ToDataPlane } from './protocol.ts';

// worker-entry.ts in the source tree, worker-entry.js in the compiled package (dist/).
const WORKER_ENTRY = fileURLToPath(new URL(`../dataplane/worker-entry${extname(import.meta.url)}`, import.meta.url));

/** The control plane's end of the channel to a worker process. */
class WorkerEnd extends EventEmitter<DataPlaneEndEvents> implements DataPlaneEnd {
  readonly id: number;
  readonly pid: number;
  private readonly worker: Worker;
  private gone: boolean;

  constructor(worker: Worker) {
    super();
    this.worker = worker;
    this.id = worker.id;
    this.pid = worker.process.pid ?? 0;
    this.gone = false;
    worker.on('message', (msg: unknown) => {
      if (isProtocolMessage(msg)) this.emit('message', msg as ToControlPlane);
    });
    // A send racing the worker's death reports here; its exit follows.
    worker.on('error', () => {});
    worker.once('exit', (code, signal) => {
      this.gone = true;
      this.emit('exit', code, signal);
    });
  }

  send(msg: ToDataPlane): void {
    if (this.gone || !this.worker.isConnected()) return;
    this.worker.send(msg);
  }

  kill(): void {
    this.worker.process.kill('SIGKILL');
  }
}

let configured = false;

/**
 * Forks a worker process for one data plane. `execArgv` are its Node flags; `env` is
 * added to this process's environment.
 */
export function forkDataPlane(execArgv: readonly string[], env: Record<string, string>): DataPlaneEnd {
  if (!configured) {
    // Advanced serialization: the compiled Config (with its Map) and typed arrays cross whole.
    cluster.setupPrimary({ exec: WORKER_ENTRY, execArgv: [...execArgv], serialization: 'advanced' });
    configured = true;
  }
  return new WorkerEnd(cluster.fork(env));
}

/** A worker process's end of the channel to the control plane in its parent. */
export function parentEnd(log: Logger): ControlPlaneEnd {
  let exiting = false;
  return {
    send(msg, done) {
      if (process.send === undefined || !process.connected) {
        done?.();
        return;
      }
      process.send(msg, undefined, {}, (err) => {
        if (err !== null && err !== undefined && !exiting) log.error({ message: msg.t, err: err.message }, `message to the control plane failed: ${err.message}`);
        done?.();
      });
    },
    onMessage(handler) {
      process.on('message', (msg: unknown) => {
        if (isProtocolMessage(msg)) handler(msg as ToDataPlane);
      });
    },
    exit(code) {
      exiting = true;
      process.exit(code);
    },
  };
}
