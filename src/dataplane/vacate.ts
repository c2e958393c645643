// A VIP about to move to another node in a planned handover. Once the new holder's
// gratuitous ARP is out, a client's packets on a connection it opened to the VIP reach
// a host that never heard of that connection, which answers with a reset: a keep-alive
// client loses the request it sends next. So before this node lets the VIP go, the
// connections accepted on its address are wound down the way HAProxy's soft stop winds
// down a listener: idle keep-alive connections are closed now (a FIN the client sees
// before it reuses them), the response in flight on a busy one goes out with
// `Connection: close`, HTTP/2 sessions get a GOAWAY, and connections accepted on the
// address until the VIP is gone are answered the same way. The elector waits for them
// (bounded) and only then hands the lease over. Once the new holder serves, the answers
// to requests this node received until then still leave from the VIP's address, so the
// elector keeps the address until they are out (bounded too): it lingers.

import type { Socket } from 'node:net';

/**
 * How long a lingering data plane lets requests still on their way in be read (and then
 * one more turn of the event loop, whose poll phase reads them): bytes a client sent
 * before the new holder's gratuitous ARP reached it arrive within a millisecond on a LAN.
 * Kept short: the old holder still has the address meanwhile.
 */
export const LINGER_READ_MS = 10;
/** How often a lingering data plane looks whether the answers owed on the address are out. */
export const LINGER_POLL_MS = 10;

/** Normalizes an IPv4-mapped IPv6 address (a dual-stack listener's view) to IPv4. */
export function plainAddress(address: string | undefined): string {
  if (address === undefined) return '';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/** The local addresses being handed over; read on every request, so it costs nothing while empty. */
export class Vacancies {
  private readonly leaving = new Set<string>();

  /** True when `socket` was accepted on an address being handed over. */
  covers(socket: Socket | undefined): boolean {
    if (this.leaving.size === 0 || socket === undefined) return false;
    return this.leaving.has(plainAddress(socket.localAddress));
  }

  set(address: string, leaving: boolean): void {
    if (leaving) this.leaving.add(address);
    else this.leaving.delete(address);
  }

  has(address: string): boolean {
    return this.leaving.has(address);
  }
}

/** Something that closes when its connection is done: a socket or an HTTP/2 session. */
export interface Closing {
  readonly closed?: boolean;
  readonly destroyed?: boolean;
  once(event: 'close', listener: () => void): unknown;
}

/**
 * Waits up to `wait` ms for every one of `open` to close; resolves with how many are
 * still open then. Event-driven: one 'close' listener each and one timer.
 */
export function closedWithin(open: readonly Closing[], wait: number): Promise<number> {
  let left = open.filter((c) => c.closed !== true && c.destroyed !== true).length;
  if (left === 0) return Promise.resolve(0);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(left), wait);
    for (const c of open) {
      if (c.closed === true || c.destroyed === true) continue;
      c.once('close', () => {
        left--;
        if (left === 0) {
          clearTimeout(timer);
          resolve(0);
        }
      });
    }
  });
}
