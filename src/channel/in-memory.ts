// The channel within one process (`--workers 0`, tests, the benchmark): the data plane
// runs beside the control plane and the same messages pass as objects, delivered on a
// later turn of the event loop and in order, as IPC delivers them. Nothing is copied:
// configs are frozen (src/config/freeze.ts), and the other messages are never changed
// after they are sent.

import { EventEmitter } from 'node:events';
import type { ControlPlaneEnd, DataPlaneEnd, DataPlaneEndEvents } from './ends.ts';
import type { ToControlPlane, ToDataPlane } from './protocol.ts';

/** Delivers messages one event-loop turn later, in the order sent. */
class Mailbox<T> {
  private readonly queue: T[];
  private handler: ((msg: T) => void) | null;
  private scheduled: boolean;

  constructor() {
    this.queue = [];
    this.handler = null;
    this.scheduled = false;
  }

  post(msg: T): void {
    this.queue.push(msg);
    if (!this.scheduled && this.handler !== null) {
      this.scheduled = true;
      setImmediate(() => this.drain());
    }
  }

  receive(handler: (msg: T) => void): void {
    this.handler = handler;
    if (this.queue.length > 0 && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.drain());
    }
  }

  private drain(): void {
    this.scheduled = false;
    for (let msg = this.queue.shift(); msg !== undefined; msg = this.queue.shift()) this.handler!(msg);
  }

  clear(): void {
    this.queue.length = 0;
  }
}

/** The control plane's end of an in-memory channel. */
class InProcessEnd extends EventEmitter<DataPlaneEndEvents> implements DataPlaneEnd {
  readonly id: number;
  readonly pid: number;
  readonly down: Mailbox<ToDataPlane>;
  gone: boolean;
  killed: boolean;

  constructor(id: number) {
    super();
    this.id = id;
    this.pid = process.pid;
    this.down = new Mailbox();
    this.gone = false;
    this.killed = false;
  }

  send(msg: ToDataPlane): void {
    if (!this.gone) this.down.post(msg);
  }

  /** There is no process to kill: the data plane is told to stop with no time for its requests. */
  kill(): void {
    if (this.gone || this.killed) return;
    this.killed = true;
    this.down.clear();
    this.down.post({ t: 'stop', timeout: 0 });
  }
}

/** A channel within this process: `control` for the control plane, `data` for the data plane. */
export function inMemoryChannel(id: number): { control: DataPlaneEnd; data: ControlPlaneEnd } {
  const control = new InProcessEnd(id);
  const up = new Mailbox<ToControlPlane>();
  let exiting = false;
  up.receive((msg) => {
    if (!control.gone) control.emit('message', msg);
  });
  const data: ControlPlaneEnd = {
    send(msg, done) {
      if (!control.gone) up.post(msg);
      done?.();
    },
    onMessage(handler) {
      control.down.receive(handler);
    },
    exit(code) {
      if (exiting) return;
      exiting = true;
      // After the messages sent before it, as a process's exit follows its last message.
      setImmediate(() => {
        control.gone = true;
        control.emit('exit', control.killed ? null : code, control.killed ? 'SIGKILL' : null);
      });
    },
  };
  return { control, data };
}
