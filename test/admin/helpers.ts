// A small AdminRuntime over real Pools (with real backends behind them), and a reader
// of server-sent events, for the admin tests.

import { request } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { BackendConfig, Config, HealthCheckConfig, PoolConfig } from '../../src/config/types.ts';
import { EventBus } from '../../src/events.ts';
import type { VipEvent } from '../../src/events.ts';
import { Pool } from '../../src/pool/pool.ts';
import type { AdminRuntime, ListenerView, ReloadOutcome, VipStatusView } from '../../src/admin/runtime.ts';

/** A PoolConfig literal with test-friendly defaults. */
export function poolConfig(name: string, backends: BackendConfig[], overrides: Partial<PoolConfig> = {}): PoolConfig {
  return {
    name,
    balance: 'weighted-round-robin',
    backends,
    hostHeader: 'preserve',
    healthCheck: null,
    outlier: null,
    connectTimeout: 1000,
    responseTimeout: 5000,
    idleTimeout: 5000,
    queueSize: 1024,
    queueTimeout: 5000,
    retries: 0,
    retryBudgetPercent: 20,
    slowStart: 0,
    panic: false,
    sticky: null,
    debugHeaders: false,
    ...overrides,
  };
}

/** Health checks every `interval` ms that take a backend down after one failure. */
export function quickChecks(interval = 100): HealthCheckConfig {
  return {
    path: '/healthz', method: 'GET', port: null, host: null, interval, timeout: 500,
    rise: 1, fall: 1, expectStatus: [[200, 399]], expectBody: null, startUnhealthy: false,
  };
}

/**
 * What src/control/control-plane.ts provides, cut down to what the admin side reads: real pools on a
 * real bus, listeners and VIPs a test sets directly, and a reload whose outcome the
 * test chooses (published on the bus the way the runtime publishes it).
 */
export class TestRuntime implements AdminRuntime {
  readonly bus: EventBus;
  node: string | null;
  leaseDurationMs: number | null;
  listenerViews: ListenerView[];
  vipViews: VipStatusView[];
  nextReload: ReloadOutcome;
  reloads: number;
  private current: Map<string, Pool>;
  private readonly cfg: Config;

  constructor(pools: PoolConfig[], options: { node?: string | null; leaseDurationMs?: number | null } = {}) {
    this.bus = new EventBus();
    this.current = new Map(pools.map((p) => [p.name, new Pool(p, this.bus)]));
    this.node = options.node ?? null;
    this.leaseDurationMs = options.leaseDurationMs ?? null;
    this.listenerViews = [{ name: 'web', address: '127.0.0.1:8080', bound: true, connections: 0, events: {} }];
    this.vipViews = [];
    this.nextReload = { ok: true, errors: [] };
    this.reloads = 0;
    this.cfg = {
      file: '/etc/tandem/test.yaml',
      workers: 1,
      shutdownTimeout: 5000,
      log: { level: 'info', format: 'auto' },
      trustedProxies: [],
      accessLog: null,
      listeners: [{ name: 'web', host: '127.0.0.1', port: 8080, tls: null, engine: 'node', headersTimeout: 10000, requestTimeout: 0, keepAliveTimeout: 5000, maxHeaderSize: 16384, sendTimeout: 30000, maxConnections: 0 }],
      routes: pools.map((p) => ({
        name: `to-${p.name}`,
        listeners: [],
        match: { hosts: [`${p.name}.example.com`], hostSuffixes: [], pathPrefix: '/', methods: [], headers: [] },
        pool: p.name,
        rateLimit: null,
      })),
      pools: new Map(pools.map((p) => [p.name, p])),
      admin: null,
      ha: null,
    };
  }

  config(): Config { return this.cfg; }
  pools(): ReadonlyMap<string, Pool> { return this.current; }
  listeners(): ListenerView[] { return this.listenerViews; }
  vips(): VipStatusView[] { return this.vipViews; }

  /** The backend `name` of pool `pool`; throws when absent. */
  backend(pool: string, name: string) {
    const b = this.current.get(pool)?.byName.get(name);
    if (b === undefined) throw new Error(`no backend ${pool}/${name}`);
    return b;
  }

  async reload(): Promise<ReloadOutcome> {
    this.reloads++;
    const outcome = this.nextReload;
    this.bus.publish({ type: 'reload', result: outcome.ok ? 'success' : 'failure', errors: outcome.errors });
    return outcome;
  }

  async releaseVip(name: string): Promise<boolean> {
    const v = this.vipViews.find((x) => x.name === name);
    if (v === undefined) return false;
    this.setVip(name, 'BACKUP', null);
    return true;
  }

  /** Changes a VIP's state the way the elector would, event included. */
  setVip(name: string, state: VipStatusView['state'], holder: string | null, epochStep = 1): void {
    const v = this.vipViews.find((x) => x.name === name);
    if (v === undefined) throw new Error(`no VIP ${name}`);
    v.state = state;
    v.holder = holder;
    v.epoch += epochStep;
    v.leaseRemainingMs = state === 'MASTER' ? (this.leaseDurationMs ?? 1000) : 0;
    const event: VipEvent = {
      type: 'vip', vip: v.name, state, node: this.node ?? '', holder, epoch: v.epoch,
      address: v.address, interface: v.interface, leaseRemaining: v.leaseRemainingMs,
    };
    this.bus.publish(event);
  }

  async close(): Promise<void> {
    await Promise.all(Array.from(this.current.values(), (p) => p.close()));
  }
}

/** The JSON body of an admin answer; tests read it field by field, so it stays loosely typed. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function json(res: Response): Promise<any> {
  return res.json();
}

export interface SseEvent {
  readonly id: string | null;
  readonly event: string;
  readonly data: unknown;
}

/** A client of a server-sent event stream that collects events and can wait for one. */
export class SseClient {
  readonly events: SseEvent[] = [];
  /** Status and headers of the answer. */
  response: IncomingMessage | null = null;
  ended = false;
  /** The stream's cursor, as EventSource keeps it: the last `id:` seen, id-only frames included. */
  lastId: string | null = null;
  private buffer = '';
  private waiters: { test: (e: SseEvent) => boolean; resolve: (e: SseEvent) => void }[] = [];
  private endWaiters: (() => void)[] = [];
  private res: IncomingMessage | null = null;

  /** Connects to `url`; resolves once the response headers arrived. */
  static connect(url: string, headers: Record<string, string> = {}): Promise<SseClient> {
    const client = new SseClient();
    return new Promise((resolve, reject) => {
      const req = request(url, { headers: { accept: 'text/event-stream', ...headers } }, (res) => {
        client.response = res;
        client.res = res;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => client.feed(chunk));
        res.on('end', () => client.finish());
        res.on('close', () => client.finish());
        resolve(client);
      });
      req.on('error', reject);
      req.end();
    });
  }

  /** Resolves with the first event (already seen or still to come) that passes `test`. */
  waitFor(test: (e: SseEvent) => boolean, timeoutMs = 5000): Promise<SseEvent> {
    const seen = this.events.find(test);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching event in ${timeoutMs} ms; saw ${JSON.stringify(this.events)}`)), timeoutMs);
      this.waiters.push({ test, resolve: (e) => { clearTimeout(timer); resolve(e); } });
    });
  }

  /** Resolves when the server ends the stream. */
  waitForEnd(timeoutMs = 5000): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('stream did not end')), timeoutMs);
      this.endWaiters.push(() => { clearTimeout(timer); resolve(); });
    });
  }

  /** Events of one type, in order. */
  of(type: string): SseEvent[] {
    return this.events.filter((e) => e.event === type);
  }

  close(): void {
    this.res?.destroy();
  }

  private feed(chunk: string): void {
    this.buffer += chunk;
    let end: number;
    while ((end = this.buffer.indexOf('\n\n')) >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      let id: string | null = null;
      let event = 'message';
      let data = '';
      for (const line of block.split('\n')) {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'id') id = value;
        else if (field === 'event') event = value;
        else if (field === 'data') data += value;
      }
      if (id !== null) this.lastId = id;
      if (data === '') continue;
      const e: SseEvent = { id, event, data: JSON.parse(data) };
      this.events.push(e);
      this.waiters = this.waiters.filter((w) => {
        if (!w.test(e)) return true;
        w.resolve(e);
        return false;
      });
    }
  }

  private finish(): void {
    if (this.ended) return;
    this.ended = true;
    for (const w of this.endWaiters) w();
    this.endWaiters = [];
  }
}
