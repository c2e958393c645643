// The access log: one JSON line per answer (docs/configuration.md#accesslog documents
// every field), written through sonic-boom, and opened again on SIGUSR1 and reloads so
// that logrotate can rename the file under it.

import sonicBoom from 'sonic-boom';
import type { Exchange } from './exchange.ts';

// sonic-boom is CommonJS: its class is a property of the default export.
const { SonicBoom } = sonicBoom;
type Sink = InstanceType<typeof SonicBoom>;

/** How much the access log may hold back when the disk does not keep up; lines beyond it are dropped. */
export const MAX_BACKLOG = 16 * 1024 * 1024;
/** At most one line on stderr per this long about dropped lines. */
const DROP_REPORT_MS = 60_000;

/**
 * JSON-lines access log. Lines are joined in memory and handed to sonic-boom in one
 * write per event loop turn (or when 64 KiB accumulate), so a request never waits on the
 * disk; sonic-boom writes to the file descriptor with fs.write, without node's stream
 * machinery. reopen() opens the path again (the file was renamed by logrotate): lines
 * from then on go to the new file, none is lost.
 */
export class AccessLog {
  readonly path: string;
  private out: Sink;
  private buffer: string;
  private scheduled: boolean;
  /** The file could not be opened or written: lines are dropped until a reopen succeeds. */
  private failed: boolean;
  private closed: boolean;
  private lastDropReport: number;
  private readonly log: (msg: string) => void;

  constructor(path: string, log: (msg: string) => void = () => {}) {
    this.path = path;
    this.log = log;
    this.buffer = '';
    this.scheduled = false;
    this.failed = false;
    this.closed = false;
    this.lastDropReport = -Infinity;
    this.out = this.open();
  }

  private open(): Sink {
    const out = this.path === 'stdout'
      ? new SonicBoom({ fd: 1, maxLength: MAX_BACKLOG })
      : new SonicBoom({ dest: this.path, append: true, maxLength: MAX_BACKLOG });
    // A log that cannot be written (folder gone, disk full, stdout closed) must never
    // take the data plane down: say so once and drop lines until it is reopened.
    out.on('error', (err: Error) => {
      if (out !== this.out) return;
      if (!this.failed) this.log(`access log ${this.path}: ${err.message}; dropping access log lines`);
      this.failed = true;
      this.buffer = '';
    });
    out.on('drop', () => {
      const now = performance.now();
      if (now - this.lastDropReport < DROP_REPORT_MS) return;
      this.lastDropReport = now;
      this.log(`access log ${this.path}: the disk does not keep up (${MAX_BACKLOG} bytes waiting); dropping access log lines`);
    });
    return out;
  }

  write(e: Exchange, seconds: number): void {
    if (this.failed) return;
    this.buffer += line(e, seconds);
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

  /**
   * Opens the path again (logrotate renamed the file); resolves once lines go to the new
   * file, with null, or with the reason it cannot be opened. Lines waiting are written
   * first, to whichever file was open: none is lost. A log that had failed is retried.
   */
  reopen(): Promise<string | null> {
    if (this.closed || this.path === 'stdout') return Promise.resolve(null);
    this.flush();
    const out = this.out;
    if (this.failed) {
      // sonic-boom cannot reopen a file it never opened: start afresh.
      out.destroy();
      this.failed = false;
      this.out = this.open();
    } else {
      out.reopen();
    }
    const next = this.out;
    return new Promise((resolve) => {
      const onReady = () => {
        next.off('error', onError);
        resolve(null);
      };
      const onError = (err: Error) => {
        next.off('ready', onReady);
        resolve(err.message);
      };
      next.once('ready', onReady);
      next.once('error', onError);
    });
  }

  /** Writes what is waiting and closes the file. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.flush();
    this.closed = true;
    const out = this.out;
    if (this.failed) {
      out.destroy();
      return Promise.resolve();
    }
    this.failed = true;
    return new Promise((resolve) => {
      out.once('close', () => resolve());
      out.once('error', () => resolve());
      out.end();
    });
  }
}

function flushLog(log: AccessLog): void {
  log.flush();
}

let lastMs = -1;
let lastTime = '';

/** The time as ISO 8601, made once per millisecond: toISOString is most of a line's cost. */
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastTime = new Date(ms).toISOString();
  }
  return lastTime;
}

/** A string as a JSON value: null, or quoted and escaped. */
function str(value: string | null): string {
  return value === null ? 'null' : JSON.stringify(value);
}

/**
 * One line, fields in the order docs/configuration.md#accesslog lists them. Written out
 * rather than JSON.stringify of an object: no object per request, and about half the
 * time. Every string that comes from a request is escaped by JSON.stringify; numbers
 * are integers or finite.
 */
function line(e: Exchange, seconds: number): string {
  const req = e.req;
  let method = 'null';
  let host = 'null';
  let path = 'null';
  let protocol = 'null';
  if (req !== null) {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    method = str(req.method ?? null);
    host = JSON.stringify(req.headers.host ?? '');
    path = JSON.stringify(q < 0 ? url : url.slice(0, q));
    protocol = req.httpVersion === '1.1' ? '"HTTP/1.1"' : JSON.stringify(`HTTP/${req.httpVersion}`);
  }
  return `{"time":"${isoNow()}","requestId":${JSON.stringify(e.requestId)},"client":${JSON.stringify(e.ctx.clientAddress)},`
    + `"method":${method},"host":${host},"path":${path},"protocol":${protocol},"status":${e.status},"bytes":${e.bytes},`
    + `"received":${e.received},"duration":${Math.round(seconds * 1e6) / 1e3},"pool":${str(e.route?.pool.name ?? null)},`
    + `"backend":${str(e.backend?.name ?? null)},"retries":${e.retries},"error":${str(e.errorCode)},`
    + `"upgrade":${e.upgrade ? '"websocket"' : 'null'},"traceId":${str(e.traceId)}}\n`;
}
