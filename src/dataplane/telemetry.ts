import { createWriteStream, type WriteStream } from 'node:fs';
import type { Backend } from '../pool/backend.ts';
import type { Exchange, RequestObserver } from './forward.ts';
import type { RouteRuntime } from './generation.ts';

/** Counts one label set of tandem_requests_total and its duration histogram. */
export interface RequestHandle {
  record(status: number, seconds: number): void;
}

/** Hands out request handles; src/admin/metrics.ts implements it. */
export interface RequestMetrics {
  requestHandle(listener: string, route: string, pool: string, backend: string): RequestHandle;
}

/**
 * Where finished requests go: the metrics (through handles bound once per listener,
 * route and backend, so a request costs two Map lookups by object, never a label hash)
 * and the access log.
 */
export class Telemetry implements RequestObserver {
  private readonly metrics: RequestMetrics | null;
  private accessLog: AccessLog | null;
  private listeners: readonly string[];
  private readonly byRoute: WeakMap<RouteRuntime, Map<Backend | null, RequestHandle>[]>;
  private readonly noRoute: RequestHandle[];

  constructor(metrics: RequestMetrics | null, accessLog: AccessLog | null, listeners: readonly string[]) {
    this.metrics = metrics;
    this.accessLog = accessLog;
    this.listeners = listeners;
    this.byRoute = new WeakMap();
    this.noRoute = [];
  }

  /**
   * A reload changed the access log. Requests in flight keep this Telemetry, so their
   * lines go to the new log; the old one is closed by the caller.
   */
  setAccessLog(log: AccessLog | null): void {
    this.accessLog = log;
  }

  /** A reload renamed or reordered listeners. */
  setListeners(listeners: readonly string[]): void {
    this.listeners = listeners;
    this.noRoute.length = 0;
  }

  finished(e: Exchange): void {
    const seconds = (performance.now() - e.start) / 1000;
    if (this.metrics !== null) this.handle(e).record(e.status, seconds);
    if (this.accessLog !== null) this.accessLog.write(e, seconds);
  }

  private handle(e: Exchange): RequestHandle {
    const li = e.ctx.listener;
    const route = e.route;
    if (route === null) {
      return this.noRoute[li] ??= this.metrics!.requestHandle(this.listeners[li] ?? '', '', '', '');
    }
    let perListener = this.byRoute.get(route);
    if (perListener === undefined) this.byRoute.set(route, perListener = []);
    const map = perListener[li] ??= new Map();
    let h = map.get(e.backend);
    if (h === undefined) {
      h = this.metrics!.requestHandle(this.listeners[li] ?? '', route.name, route.pool.name, e.backend?.name ?? '');
      map.set(e.backend, h);
    }
    return h;
  }
}

/**
 * JSON-lines access log. Lines are joined in memory and written in one call per event
 * loop turn (or when 64 KiB accumulate), so a request never waits on the disk.
 */
export class AccessLog {
  private readonly out: NodeJS.WritableStream | WriteStream;
  private buffer: string;
  private scheduled: boolean;

  private failed: boolean;

  constructor(path: string, log: (msg: string) => void = () => {}) {
    this.out = path === 'stdout' ? process.stdout : createWriteStream(path, { flags: 'a' });
    this.buffer = '';
    this.scheduled = false;
    this.failed = false;
    // A log that cannot be written (folder gone, disk full, stdout closed) must never
    // take the data plane down: say so once and drop lines from then on.
    (this.out as NodeJS.EventEmitter).on('error', (err: Error) => {
      if (!this.failed) log(`access log ${path}: ${err.message}; dropping access log lines`);
      this.failed = true;
      this.buffer = '';
    });
  }

  write(e: Exchange, seconds: number): void {
    if (this.failed) return;
    const req = e.req;
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    this.buffer += JSON.stringify({
      time: new Date().toISOString(),
      client: e.ctx.clientAddress,
      method: req.method,
      host: req.headers.host ?? '',
      path: q < 0 ? url : url.slice(0, q),
      status: e.status,
      bytes: e.bytes,
      duration: Math.round(seconds * 1e6) / 1e3,
      pool: e.route?.pool.name ?? null,
      backend: e.backend?.name ?? null,
      retries: e.retries,
      error: e.errorCode,
    }) + '\n';
    if (this.buffer.length > 65536) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(flushLog, this);
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.buffer === '' || this.failed) return;
    this.out.write(this.buffer);
    this.buffer = '';
  }

  close(): Promise<void> {
    this.flush();
    this.failed = true;
    if (this.out === process.stdout) return Promise.resolve();
    return new Promise((resolve) => (this.out as WriteStream).end(resolve));
  }
}

function flushLog(log: AccessLog): void {
  log.flush();
}
