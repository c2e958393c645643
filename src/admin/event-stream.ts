// The server-sent event stream of GET /api/v1/events. Every bus event gets the next
// integer id and is serialised once into a frame that all clients share; the last
// `capacity` frames stay in a ring so a client that reconnects with Last-Event-ID
// gets what it missed. The vip-agent follows this stream and removes its VIP when the
// stream goes quiet for a lease, so pings come at least five times per lease. Each ping
// also says how long every VIP held here has left of its lease, counted from the last
// renewal: a sidecar whose proxy freezes removes the VIP before that runs out.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { BackendEvent, TandemEvent, VipEvent } from '../events.ts';
import type { AdminRuntime } from './runtime.ts';

export interface EventStreamOptions {
  /** Frames kept for resumption (default 1000). */
  capacity?: number;
  /** Bytes a slow client may have queued before it is cut off to resume later (default 1 MiB). */
  maxBufferedBytes?: number;
}

/** Ping period: at least every second and five times per lease, never busier than 50 ms. */
export function pingInterval(leaseDurationMs: number | null): number {
  const fifth = leaseDurationMs === null ? 1000 : Math.floor(leaseDurationMs / 5);
  return Math.max(50, Math.min(1000, fifth));
}

export class EventStream {
  private readonly runtime: AdminRuntime;
  private readonly capacity: number;
  private readonly maxBuffered: number;
  private readonly ring: string[];
  /** Id of the newest event; ids start at 1. */
  private head: number;
  private readonly clients: Set<ServerResponse>;
  private readonly onEvent: (event: TandemEvent) => void;
  private pingTimer: NodeJS.Timeout | null;
  private closed: boolean;

  constructor(runtime: AdminRuntime, options: EventStreamOptions = {}) {
    this.runtime = runtime;
    this.capacity = options.capacity ?? 1000;
    this.maxBuffered = options.maxBufferedBytes ?? 1 << 20;
    this.ring = new Array<string>(this.capacity);
    this.head = 0;
    this.clients = new Set();
    this.onEvent = (event) => this.publish(event);
    this.pingTimer = null;
    this.closed = false;
    runtime.bus.on('event', this.onEvent);
    this.schedulePing();
  }

  /** Id of the newest event so far (0 before the first). */
  lastId(): number {
    return this.head;
  }

  /** Clients streaming now. */
  clientCount(): number {
    return this.clients.size;
  }

  /** Takes over `res` and streams to it until the client leaves or close() is called. */
  attach(req: IncomingMessage, res: ServerResponse, lastEventId: string | undefined): void {
    if (this.closed) {
      res.writeHead(503, { 'content-type': 'text/plain' }).end('shutting down');
      return;
    }
    req.socket.setNoDelay(true);
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      // Tells nginx-like proxies in front of the admin port not to buffer the stream.
      'x-accel-buffering': 'no',
    });
    res.on('close', () => this.clients.delete(res));
    res.on('error', () => this.clients.delete(res));
    res.write('retry: 1000\n\n');
    // Current state first, so a client needs nothing else to be up to date.
    const node = this.runtime.node ?? '';
    for (const v of this.runtime.vips()) {
      const event: VipEvent = {
        type: 'vip', vip: v.name, state: v.state, node, holder: v.holder, epoch: v.epoch,
        address: v.address, interface: v.interface, leaseRemaining: v.leaseRemainingMs,
      };
      res.write(frame(null, event));
    }
    for (const pool of this.runtime.pools().values()) {
      for (const b of pool.backends) {
        const event: BackendEvent = { type: 'backend', pool: pool.name, backend: b.name, state: b.state(), reason: 'current state' };
        res.write(frame(null, event));
      }
    }
    const from = this.resumeFrom(lastEventId);
    for (let id = from; id <= this.head; id++) res.write(this.ring[(id - 1) % this.capacity]);
    // Without a replay the client's cursor would still point into an older history
    // (or nowhere); an id-only frame moves it to now without dispatching an event.
    if (from > this.head && this.head > 0) res.write(`id: ${this.head}\n\n`);
    this.clients.add(res);
  }

  /** Ends every stream but goes on: clients reconnect (with Last-Event-ID) and are checked anew. */
  endClients(): void {
    for (const res of this.clients) res.end();
    this.clients.clear();
  }

  /** Ends every stream and stops listening to the bus; for shutdown. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.runtime.bus.off('event', this.onEvent);
    if (this.pingTimer !== null) clearTimeout(this.pingTimer);
    for (const res of this.clients) res.end();
    this.clients.clear();
  }

  /** First id to replay for a client that saw `lastEventId`; head + 1 when nothing can be. */
  private resumeFrom(lastEventId: string | undefined): number {
    if (lastEventId === undefined || !/^\d{1,15}$/.test(lastEventId)) return this.head + 1;
    const last = Number(lastEventId);
    const oldest = Math.max(1, this.head - this.capacity + 1);
    // Ids past head come from an earlier process; ids before the ring have a gap. In
    // both cases the snapshot just sent is the truth and a partial history would mislead.
    if (last > this.head || last < oldest - 1) return this.head + 1;
    return last + 1;
  }

  private publish(event: TandemEvent): void {
    const id = ++this.head;
    const f = frame(id, event);
    this.ring[(id - 1) % this.capacity] = f;
    for (const res of this.clients) this.send(res, f);
  }

  private send(res: ServerResponse, f: string): void {
    // A client that cannot keep up is cut off rather than buffered without bound; it
    // reconnects with Last-Event-ID and the ring fills the gap.
    if (res.writableLength > this.maxBuffered) {
      this.clients.delete(res);
      res.destroy();
      return;
    }
    res.write(f);
  }

  private schedulePing(): void {
    // Re-read the lease on every tick: a reload may change it.
    this.pingTimer = setTimeout(() => this.ping(), pingInterval(this.runtime.leaseDurationMs));
    this.pingTimer.unref();
  }

  private ping(): void {
    const leases: Record<string, number> = {};
    for (const v of this.runtime.vips()) if (v.state === 'MASTER' && v.leaseRemainingMs > 0) leases[v.name] = v.leaseRemainingMs;
    const f = `event: ping\ndata: ${JSON.stringify({ time: Date.now(), leases })}\n\n`;
    for (const res of this.clients) {
      // Behind a backlog a ping would only add to it; the client hears from us once it drains.
      if (!res.writableNeedDrain) this.send(res, f);
    }
    this.schedulePing();
  }
}

function frame(id: number | null, event: TandemEvent): string {
  const data = JSON.stringify(event);
  return id === null ? `event: ${event.type}\ndata: ${data}\n\n` : `id: ${id}\nevent: ${event.type}\ndata: ${data}\n\n`;
}
