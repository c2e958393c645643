import type { Socket } from 'node:net';

// The fast engine's small writes wait for the end of the loop's turn: a response (head
// and body in one buffer), a bodiless answer's head and a request head to a backend are
// written once every event of the turn is handled, from a setImmediate, rather than from
// the callback that made them. A send over TCP wakes the process reading the other end if
// it sleeps; on this 2-core virtual machine that wake-up took 10% of the worker's CPU
// under load (perf: sock_def_readable, more than the TCP send path itself). Written from
// each callback, the sends to one client or backend process are spread over the turn and
// each is likely to find it asleep again; written together, the first wakes it and the
// rest find it awake. The system calls are the same, and so is the order on each socket
// (corked writes stay in the socket's own queue; end() flushes them first, destroy()
// drops them: front.ts closes idle connections with destroySoon()).
// Measured with wrk -c50 and the benchmark's origin, each tandem alone, 6 rounds
// alternating with the same code writing at once: 22.5-23.6 against 23.3-24.4 µs of CPU
// per request, 40.8-42.0k against 36.0-39.3k req/s, mean latency 1.16-1.21 against
// 1.26-1.38 ms. Kernel time per request: 8.5-9.8 µs against 10.2-10.3 (HAProxy 6.4-7.0).

const corked: Socket[] = [];

function flush(): void {
  try {
    for (let i = 0; i < corked.length; i++) corked[i].uncork();
  } finally {
    // Emptied even if an uncork threw, or no later turn would flush again.
    corked.length = 0;
  }
}

/** Holds `s`'s writes until every event of this turn of the loop is handled. */
export function corkTurn(s: Socket): void {
  s.cork();
  if (corked.push(s) === 1) setImmediate(flush);
}
