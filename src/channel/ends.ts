// The two ends of the channel between the control plane and one data plane. The
// control plane and the data plane are written against these, never against
// node:cluster or process.send, so the same two classes run whether the data plane is
// a worker process (src/channel/ipc.ts) or lives in the control plane's own process
// (src/channel/in-memory.ts, `--workers 0`).

import type { EventEmitter } from 'node:events';
import type { ToControlPlane, ToDataPlane } from './protocol.ts';

export interface DataPlaneEndEvents {
  message: [msg: ToControlPlane];
  /** The data plane is gone: its process exited, or the in-process one stopped. */
  exit: [code: number | null, signal: string | null];
}

/** The control plane's end of the channel to one data plane. */
export interface DataPlaneEnd extends EventEmitter<DataPlaneEndEvents> {
  /** 1, 2, … in the order data planes were started. */
  readonly id: number;
  /** The process the data plane runs in. */
  readonly pid: number;
  /** Delivered in order; dropped once the data plane is gone. */
  send(msg: ToDataPlane): void;
  /** Ends the data plane at once, its requests in flight cut. */
  kill(): void;
}

/** The data plane's end of the channel to its control plane. */
export interface ControlPlaneEnd {
  /** `done` runs once the message is handed over, or could not be. */
  send(msg: ToControlPlane, done?: () => void): void;
  /** Every message from the control plane, in the order sent. */
  onMessage(handler: (msg: ToDataPlane) => void): void;
  /** The data plane has stopped: ends a worker process, or tells the in-process control plane. */
  exit(code: number): void;
}
