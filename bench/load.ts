// The benchmark's load generators. autocannon runs as a library in a child process of
// its own, driven over IPC, so it never shares an event loop with the harness or with a
// target. wrk (C, one thread, epoll) runs once per measurement with a Lua `done()` hook
// that prints its summary as one JSON line; it needs far less CPU per request than
// autocannon, which leaves more of a small machine to the proxy under test.

import { execFile, fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunResult } from './report.ts';
import { findBinary, missingReason } from './targets/native.ts';

/** The load generators a run can use. */
export const LOADS = ['autocannon', 'wrk'] as const;
export type LoadId = (typeof LOADS)[number];

/** What one load run measured of one target. */
export type Measured = Omit<RunResult, 'round' | 'case' | 'load' | 'target' | 'position' | 'rssBytes' | 'cpuMicrosPerRequest'>;

/** A started load generator. */
export interface LoadGenerator {
  readonly id: LoadId;
  /** Load on `url` with `connections` keep-alive connections for `duration` seconds. */
  run(url: string, connections: number, duration: number): Promise<Measured>;
  stop(): Promise<void>;
  /** For a signal handler: ends its processes at once. */
  kill(): void;
}

/** Why a load generator cannot run here, or null when it can. */
export function loadMissing(id: LoadId): string | null {
  return id === 'wrk' ? missingReason('wrk') : null;
}

/** Starts `id`; `dir` takes the files it needs (wrk's script). */
export async function startLoad(id: LoadId, dir: string): Promise<LoadGenerator> {
  return id === 'wrk' ? new Wrk(dir) : Autocannon.start();
}

interface LoadRequest {
  readonly id: number;
  readonly url: string;
  readonly connections: number;
  readonly duration: number;
}

type LoadReply = { id: number; result: Measured } | { id: number; error: string };

class Autocannon implements LoadGenerator {
  readonly id = 'autocannon';
  readonly child: ChildProcess;
  private next: number;
  private pending: Map<number, { resolve: (r: Measured) => void; reject: (e: Error) => void }>;

  private constructor(child: ChildProcess) {
    this.child = child;
    this.next = 0;
    this.pending = new Map();
    child.on('message', (m: LoadReply) => {
      const p = this.pending.get(m.id);
      if (p === undefined) return;
      this.pending.delete(m.id);
      if ('error' in m) p.reject(new Error(m.error));
      else p.resolve(m.result);
    });
    child.once('exit', (code, signal) => {
      for (const p of this.pending.values()) p.reject(new Error(`load generator exited (${signal ?? code})`));
      this.pending.clear();
    });
  }

  static async start(): Promise<Autocannon> {
    // execArgv: [] so that flags of this process (node --test, --cpu-prof) stay here.
    const child = fork(import.meta.filename, ['--autocannon'], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`load generator exited (${code}) before it was ready`)));
    });
    return new Autocannon(child);
  }

  run(url: string, connections: number, duration: number): Promise<Measured> {
    const id = ++this.next;
    return new Promise<Measured>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.send({ id, url, connections, duration } satisfies LoadRequest);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(timer);
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }
}

/** The fields of autocannon's result this benchmark reads. */
interface AutocannonResult {
  duration: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  latency: { p50: number; p90: number; p99: number; mean: number; max: number };
  requests: { total: number };
  throughput: { total: number };
}

type AutocannonFn = (opts: { url: string; connections: number; duration: number; pipelining: number }, cb: (err: Error | null, result: AutocannonResult) => void) => unknown;

function autocannonMain(): void {
  const autocannon = createRequire(import.meta.url)('autocannon') as AutocannonFn;
  process.on('message', (m: LoadRequest) => {
    autocannon({ url: m.url, connections: m.connections, duration: m.duration, pipelining: 1 }, (err, r) => {
      if (err !== null) {
        process.send!({ id: m.id, error: err.message } satisfies LoadReply);
        return;
      }
      const seconds = r.duration > 0 ? r.duration : m.duration;
      const result: Measured = {
        durationSeconds: seconds,
        rps: r.requests.total / seconds,
        requests: r.requests.total,
        bytesPerSecond: r.throughput.total / seconds,
        latency: { p50: r.latency.p50, p90: r.latency.p90, p99: r.latency.p99, mean: r.latency.mean, max: r.latency.max },
        // autocannon counts timeouts among its errors too; keep them apart.
        errors: r.errors - r.timeouts,
        timeouts: r.timeouts,
        non2xx: r.non2xx,
      };
      process.send!({ id: m.id, result } satisfies LoadReply);
    });
  });
  process.once('disconnect', () => process.exit(0));
  process.send!({ ready: true });
}

/** Marks the line wrk's `done()` prints, so nothing else on stdout is taken for it. */
const WRK_TAG = 'tandem-bench-wrk';

/** wrk's summary as one JSON line; latencies are in µs, as wrk keeps them. */
export const WRK_SCRIPT = `-- Written by bench/load.ts: wrk's summary as one JSON line.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"${WRK_TAG}":1,"durationMicros":%.0f,"requests":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,'
      .. '"p50":%.0f,"p90":%.0f,"p99":%.0f,"mean":%.3f,"max":%.0f}\\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
`;

const WRK_FIELDS = ['durationMicros', 'requests', 'bytes', 'connect', 'read', 'write', 'status', 'timeout', 'p50', 'p90', 'p99', 'mean', 'max'] as const;

/**
 * What wrk measured, from its whole stdout run with WRK_SCRIPT. Latencies become ms
 * (fractions kept); wrk's status errors (answers of 400 and above) count as non-2xx.
 */
export function parseWrk(stdout: string): Measured {
  const line = stdout.split('\n').find((l) => l.startsWith(`{"${WRK_TAG}":1,`));
  if (line === undefined) throw new Error(`wrk printed no summary line:\n${stdout}`);
  const s = JSON.parse(line) as Record<(typeof WRK_FIELDS)[number], number>;
  for (const k of WRK_FIELDS) {
    if (typeof s[k] !== 'number' || !Number.isFinite(s[k]) || s[k] < 0) throw new Error(`wrk summary has no valid ${k}: ${line}`);
  }
  if (s.durationMicros === 0) throw new Error(`wrk ran for no time: ${line}`);
  const seconds = s.durationMicros / 1e6;
  return {
    durationSeconds: seconds,
    rps: s.requests / seconds,
    requests: s.requests,
    bytesPerSecond: s.bytes / seconds,
    latency: { p50: s.p50 / 1000, p90: s.p90 / 1000, p99: s.p99 / 1000, mean: s.mean / 1000, max: s.max / 1000 },
    errors: s.connect + s.read + s.write,
    timeouts: s.timeout,
    non2xx: s.status,
  };
}

class Wrk implements LoadGenerator {
  readonly id = 'wrk';
  private readonly binary: string;
  private readonly script: string;
  private current: ChildProcess | null;

  constructor(dir: string) {
    const binary = findBinary('wrk');
    if (binary === null) throw new Error(missingReason('wrk')!);
    this.binary = binary;
    this.script = join(dir, 'wrk-summary.lua');
    writeFileSync(this.script, WRK_SCRIPT);
    this.current = null;
  }

  run(url: string, connections: number, duration: number): Promise<Measured> {
    // wrk takes whole seconds.
    const seconds = Math.max(1, Math.round(duration));
    const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '-s', this.script, url];
    return new Promise<Measured>((resolve, reject) => {
      // Bounded: wrk stops itself after `seconds`; the timeout is for a wrk that hangs.
      this.current = execFile(this.binary, args, { encoding: 'utf8', timeout: (seconds + 30) * 1000 }, (err, stdout, stderr) => {
        this.current = null;
        if (err !== null) {
          reject(new Error(`wrk ${args.join(' ')}: ${err.message}\n${stdout}${stderr}`));
          return;
        }
        try {
          resolve(parseWrk(stdout));
        } catch (e) {
          reject(e as Error);
        }
      });
    });
  }

  async stop(): Promise<void> {
    this.kill();
  }

  kill(): void {
    this.current?.kill('SIGKILL');
  }
}

if (import.meta.main && process.argv[2] === '--autocannon') autocannonMain();
