// Real HTTP backends for tests: node:http servers on 127.0.0.1, port 0, whose behaviour
// a test changes by assigning fields while they run.
//
//   const b = await startBackend({ name: 'web1' });
//   b.status = 503;            // ordinary requests now get 503
//   b.healthStatus = 500;      // GET/HEAD /healthz now gets 500
//   b.mode = 'blackhole';      // accept, read the request, never answer
//   b.mode = 'reset';          // answer every request with a TCP RST
//   await b.stop();            // refuse connections (the port stays reserved in `port`)
//   await b.restart();         // listen again on the same port
//   await b.close();           // stop for good (also done by stopAll)
//   new Pool(poolConfig('web', [b1.config(), b2.config({ weight: 3 })]), bus);
//
// Ordinary responses have the body `name` and the header `x-backend: name`, so a test
// can tell who answered.

import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { BackendConfig, PoolConfig } from '../../src/config/types.ts';

export type BackendMode = 'normal' | 'blackhole' | 'reset';

export interface StartBackendOptions {
  /** Shown in the body and `x-backend` header of ordinary responses; default `b<port>`. */
  name?: string;
  /** Listen on this port instead of a free one. */
  port?: number;
}

/** What the backend saw of the last request to its health path. */
export interface HealthRequest {
  readonly method: string;
  readonly host: string | undefined;
}

/** A running test backend; assign the public fields to change what it does next. */
export class TestBackend {
  name: string;
  readonly port: number;
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** Status of ordinary requests (every path but `healthPath`). */
  status = 200;
  /** Status and body of `healthPath`; a function gets the 1-based count of health requests. */
  healthStatus: number | ((count: number) => number) = 200;
  healthBody = 'ok';
  healthPath = '/healthz';
  mode: BackendMode = 'normal';
  /** Ordinary requests are answered this many ms after they arrive (health checks at once); a function gets the path. */
  delayMs: number | ((path: string) => number) = 0;
  /** Requests answered or swallowed, health path excluded. */
  requests = 0;
  /** Requests to the health path. */
  healthChecks = 0;
  lastHealth: HealthRequest | null = null;
  private server: Server;
  private readonly sockets = new Set<Socket>();

  constructor(server: Server, port: number, name: string) {
    this.server = server;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.name = name;
    this.attach(server);
  }

  /** True while the server accepts connections. */
  get listening(): boolean {
    return this.server.listening;
  }

  /** Stops listening and drops every open connection, so clients see refusals and resets. */
  async stop(): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await closed;
  }

  /** Listens again on the same port, as a restarted process would. */
  async restart(): Promise<void> {
    if (this.server.listening) return;
    this.server = createServer();
    this.attach(this.server);
    await listen(this.server, this.port);
  }

  /** Stops the backend for good. */
  close(): Promise<void> {
    return this.stop();
  }

  /** A backend entry for a PoolConfig literal pointing at this server. */
  config(overrides: Partial<BackendConfig> = {}): BackendConfig {
    return {
      name: this.name,
      origin: this.url,
      protocol: 'http:',
      host: '127.0.0.1',
      port: this.port,
      weight: 1,
      backup: false,
      maxConnections: 16,
      ...overrides,
    };
  }

  private attach(server: Server): void {
    server.keepAliveTimeout = 10_000;
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => this.handle(req, res));
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const health = req.url === this.healthPath || req.url?.startsWith(this.healthPath + '?') === true;
    if (health) {
      this.healthChecks++;
      this.lastHealth = { method: req.method ?? '', host: req.headers.host };
    } else {
      this.requests++;
    }
    if (this.mode === 'blackhole') {
      req.resume();
      return;
    }
    if (this.mode === 'reset') {
      req.socket.resetAndDestroy();
      return;
    }
    req.resume();
    const body = health ? this.healthBody : this.name;
    const hs = this.healthStatus;
    const status = !health ? this.status : typeof hs === 'number' ? hs : hs(this.healthChecks);
    const answer = () => {
      res.writeHead(status, {
        'content-type': 'text/plain',
        'content-length': Buffer.byteLength(body),
        'x-backend': this.name,
      });
      res.end(body);
    };
    const delay = health ? 0 : typeof this.delayMs === 'number' ? this.delayMs : this.delayMs(req.url ?? '/');
    if (delay > 0) setTimeout(answer, delay);
    else answer();
  }
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Starts one backend on 127.0.0.1. */
export async function startBackend(options: StartBackendOptions = {}): Promise<TestBackend> {
  const server = createServer();
  const port = await listen(server, options.port ?? 0);
  return new TestBackend(server, port, options.name ?? `b${port}`);
}

/** Starts `count` backends named `${prefix}1`…`${prefix}N`. */
export function startBackends(count: number, prefix = 'b'): Promise<TestBackend[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => startBackend({ name: `${prefix}${i + 1}` })));
}

/** Stops every backend given; for `after()` hooks. */
export async function stopAll(backends: Iterable<TestBackend>): Promise<void> {
  await Promise.all(Array.from(backends, (b) => b.close()));
}

/** A PoolConfig literal with test-friendly defaults (short timeouts, no health checks); `overrides` win. */
export function poolConfig(name: string, backends: readonly BackendConfig[], overrides: Partial<PoolConfig> = {}): PoolConfig {
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
    retries: 1,
    retryBudgetPercent: 20,
    slowStart: 0,
    panic: false,
    sticky: null,
    debugHeaders: false,
    ...overrides,
  };
}
