import type { ServerResponse } from 'node:http';

// The client side's send timeout (HAProxy's `timeout client`, nginx's `send_timeout`). A
// response whose writes wait on a client that stopped reading is tracked from the moment
// its socket's buffer filled; if the client takes no byte for the listener's send
// timeout, the connection is destroyed, and with it the upstream exchange (forward.ts
// aborts it when the response closes), so a reader-less client cannot hold a backend
// connection for ever. Only stalled responses are tracked, so the cost is nothing while
// clients read; one timer checks them all.

const stalled = new Map<ServerResponse, number>();
let timer: NodeJS.Timeout | null = null;
/** How often stalled responses are checked: the send timeout is enforced to within this. */
const SWEEP_MS = 250;

/** `res` could not take a write: starts its clock, unless it is already running. */
export function writeStalled(res: ServerResponse, timeoutMs: number): void {
  if (timeoutMs <= 0 || stalled.has(res)) return;
  stalled.set(res, performance.now() + timeoutMs);
  if (timer === null) {
    timer = setInterval(sweep, SWEEP_MS);
    timer.unref();
  }
}

/** `res` drained or closed: its clock stops. */
export function writeResumed(res: ServerResponse): void {
  stalled.delete(res);
}

function sweep(): void {
  const now = performance.now();
  for (const [res, deadline] of stalled) {
    if (now < deadline) continue;
    stalled.delete(res);
    // The connection goes, not just the response, and with a reset: closing normally
    // would leave the unsent bytes (and the FIN behind them) to the kernel until the
    // client reads, which it does not.
    const socket = res.socket;
    if (socket !== null && typeof socket.resetAndDestroy === 'function' && !socket.destroyed) {
      try {
        socket.resetAndDestroy();
      } catch {
        socket.destroy();
      }
    }
    res.destroy();
  }
  if (stalled.size === 0 && timer !== null) {
    clearInterval(timer);
    timer = null;
  }
}

/** Responses being timed now (for tests and metrics). */
export function stalledCount(): number {
  return stalled.size;
}
