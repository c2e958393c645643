// Probes an address the way a stream of new clients would: a new TCP connection (or, for
// a URL, an HTTP request on a new connection) every interval, each one given up after a
// deadline. Used by `tandem drill` to count what a handover costs clients. Bounded: it
// stops by itself after `max` probes.

import net from 'node:net';
import http from 'node:http';
import https from 'node:https';

export type ProbeTarget = { readonly kind: 'tcp'; readonly host: string; readonly port: number } | { readonly kind: 'url'; readonly url: URL };

export interface ProbeResult {
  /** Start, on the performance clock. */
  readonly at: number;
  readonly ok: boolean;
  readonly ms: number;
  /** Why it failed: an error code, `timeout` or an HTTP status. */
  readonly error: string | null;
}

export interface ProberOptions {
  readonly every?: number;
  readonly deadline?: number;
  readonly max?: number;
}

export function describeTarget(t: ProbeTarget): string {
  return t.kind === 'tcp' ? `tcp://${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}` : t.url.href;
}

export class Prober {
  readonly target: ProbeTarget;
  readonly results: ProbeResult[];
  private readonly deadline: number;
  private readonly max: number;
  private started: number;
  private inFlight: number;
  private timer: NodeJS.Timeout | null;
  private drained: (() => void) | null;

  constructor(target: ProbeTarget, opts: ProberOptions = {}) {
    this.target = target;
    this.results = [];
    this.deadline = opts.deadline ?? 300;
    this.max = opts.max ?? 6000;
    this.started = 0;
    this.inFlight = 0;
    this.drained = null;
    this.timer = setInterval(() => this.tick(), opts.every ?? 10);
    this.tick();
  }

  /** Stops probing; resolves once every probe in flight has ended. */
  async stop(): Promise<ProbeResult[]> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    if (this.inFlight > 0) await new Promise<void>((r) => (this.drained = r));
    this.results.sort((a, b) => a.at - b.at);
    return this.results;
  }

  failures(): ProbeResult[] {
    return this.results.filter((r) => !r.ok);
  }

  private tick(): void {
    if (this.started >= this.max) {
      if (this.timer !== null) clearInterval(this.timer);
      this.timer = null;
      return;
    }
    this.started++;
    this.inFlight++;
    const at = performance.now();
    const end = (error: string | null) => {
      this.results.push({ at, ok: error === null, ms: performance.now() - at, error });
      if (--this.inFlight === 0 && this.drained !== null) this.drained();
    };
    if (this.target.kind === 'tcp') connectOnce(this.target.host, this.target.port, this.deadline, end);
    else requestOnce(this.target.url, this.deadline, end);
  }
}

/** The one ending of a probe: at the first of its outcomes or at the deadline, whichever comes first. */
function finisher(deadline: number, destroy: () => void, end: (error: string | null) => void): (error: string | null) => void {
  let done = false;
  const finish = (error: string | null) => {
    if (done) return;
    done = true;
    clearTimeout(t);
    destroy();
    end(error);
  };
  // Timers run before I/O in a turn of the event loop: after a stall of this process, an
  // answer that came in time may still wait in the poll phase. Let it in before giving up.
  const t = setTimeout(() => setImmediate(() => finish('timeout')), deadline);
  return finish;
}

function connectOnce(host: string, port: number, deadline: number, end: (error: string | null) => void): void {
  const s = net.connect({ host, port });
  const finish = finisher(deadline, () => s.destroy(), end);
  s.once('connect', () => finish(null));
  s.once('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
}

function requestOnce(url: URL, deadline: number, end: (error: string | null) => void): void {
  const mod = url.protocol === 'https:' ? https : http;
  // agent: false and Connection: close: every probe is a new connection, as a new client's is.
  const req = mod.get(url, { agent: false, headers: { connection: 'close' } }, (res) => {
    res.resume();
    res.once('end', () => finish(res.statusCode !== undefined && res.statusCode < 500 ? null : `HTTP ${res.statusCode}`));
    res.once('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
  });
  const finish = finisher(deadline, () => req.destroy(), end);
  req.once('error', (err: NodeJS.ErrnoException) => finish(err.code ?? err.message));
}
