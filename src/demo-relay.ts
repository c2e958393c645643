// The demo's stand-in for a VIP on loopback: one TCP address that sends each new
// connection to the listener of the node whose admin API says it holds the VIP. Demo
// only: on a real network the VIP itself moves (address and gratuitous ARP) and no relay
// stands in between.
//
// It reads every node's GET /api/v1/status every POLL ms. A connection that the holder it
// knew refuses waits (up to RETRY_WINDOW) for the admin APIs to name a new holder and
// then goes there, as a client's SYN retransmission reaches the new holder after its
// gratuitous ARP. Connections that no holder takes, or that a holder resets before it
// answers, are counted as failed and logged.

import net from 'node:net';
import { once } from 'node:events';
import { AdminClient } from './ha/admin-client.ts';

export interface RelayNode {
  readonly id: string;
  /** Admin API base URL. */
  readonly admin: string;
  /** The node's listener. */
  readonly host: string;
  readonly port: number;
}

export interface RelayOptions {
  readonly vip: string;
  readonly host: string;
  readonly port: number;
  readonly nodes: readonly RelayNode[];
  readonly log: (line: string) => void;
}

const POLL = 50;
const RETRY_WINDOW = 2000;

export class HolderRelay {
  private readonly opts: RelayOptions;
  private readonly clients: Map<string, AdminClient>;
  private readonly server: net.Server;
  private readonly sockets: Set<net.Socket>;
  private holder: RelayNode | null;
  private waiters: Set<() => void>;
  private timer: NodeJS.Timeout | null;
  private stopped: boolean;
  served: number;
  failed: number;

  constructor(opts: RelayOptions) {
    this.opts = opts;
    this.clients = new Map(opts.nodes.map((n) => [n.id, new AdminClient(n.admin, null, 500)]));
    this.server = net.createServer((socket) => this.relay(socket));
    this.sockets = new Set();
    this.holder = null;
    this.waiters = new Set();
    this.timer = null;
    this.stopped = false;
    this.served = 0;
    this.failed = 0;
  }

  /** Starts listening and following the holder. */
  async start(): Promise<void> {
    this.server.listen(this.opts.port, this.opts.host);
    await once(this.server, 'listening');
    void this.poll();
  }

  close(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    for (const wake of [...this.waiters]) wake();
    this.server.close();
    for (const s of this.sockets) s.destroy();
  }

  private async poll(): Promise<void> {
    const views = await Promise.all(this.opts.nodes.map(async (n) => {
      try {
        const vip = (await this.clients.get(n.id)!.status()).vips.find((v) => v.name === this.opts.vip);
        return { node: n, master: vip?.state === 'MASTER', epoch: vip?.epoch ?? 0, known: true };
      } catch (err) {
        // Refused: the process is gone. Anything else (a slow answer on a busy host) says nothing.
        return { node: n, master: false, epoch: 0, known: (err as { code?: string }).code === 'ECONNREFUSED' };
      }
    }));
    // During a make-before-break handover both serve; the newer epoch is the successor.
    let best: (typeof views)[number] | null = null;
    for (const v of views) if (v.master && (best === null || v.epoch > best.epoch)) best = v;
    const current = views.find((v) => v.node.id === this.holder?.id);
    if (best !== null) this.setHolder(best.node);
    else if (current === undefined || current.known) this.setHolder(null);
    if (!this.stopped) this.timer = setTimeout(() => void this.poll(), POLL);
  }

  private setHolder(next: RelayNode | null): void {
    if (next?.id === this.holder?.id) return;
    const was = this.holder;
    this.holder = next;
    const where = next === null ? 'no node holds it' : `now at ${next.id} (${next.host}:${next.port})`;
    this.opts.log(`${this.opts.vip} ${where}${was === null ? '' : `, was at ${was.id}`}; relay connections so far: ${this.served} served, ${this.failed} failed`);
    for (const wake of [...this.waiters]) wake();
  }

  /** Resolves when the holder changes or at `deadline` (performance clock). */
  private holderChange(deadline: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.waiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, Math.max(0, deadline - performance.now()));
      this.waiters.add(done);
    });
  }

  private async relay(client: net.Socket): Promise<void> {
    client.pause();
    client.on('error', () => {});
    this.sockets.add(client);
    client.once('close', () => this.sockets.delete(client));
    const deadline = performance.now() + RETRY_WINDOW;
    let tried: string | null = null;
    for (;;) {
      const target = this.holder;
      if (target !== null && target.id !== tried) {
        tried = target.id;
        const upstream = await connect(target);
        if (upstream !== null) {
          this.served++;
          // A connection the node resets before it answers (it died with the connection
          // accepted) is lost to the client: count it as failed too.
          let answered = false;
          upstream.once('data', () => (answered = true));
          upstream.on('error', (err: NodeJS.ErrnoException) => {
            if (!answered) this.lost(`${target.id} reset it (${err.code ?? err.message}) before answering`);
            client.destroy();
          });
          client.on('close', () => upstream.destroy());
          upstream.on('close', () => client.destroy());
          client.pipe(upstream);
          upstream.pipe(client);
          client.resume();
          return;
        }
      }
      if (this.stopped || client.destroyed || performance.now() >= deadline) break;
      await this.holderChange(deadline);
    }
    this.lost(tried === null ? 'no node holds the VIP' : `${tried} refused it and no other holder came up within ${RETRY_WINDOW} ms`);
    client.destroy();
  }

  private lost(why: string): void {
    this.failed++;
    this.opts.log(`${this.opts.vip}: a connection failed: ${why}`);
  }
}

function connect(n: RelayNode): Promise<net.Socket | null> {
  return new Promise((resolve) => {
    const s = net.connect({ host: n.host, port: n.port });
    s.once('connect', () => {
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', () => {
      s.destroy();
      resolve(null);
    });
  });
}
