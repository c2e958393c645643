// `npm run bench`: tandem side by side with the origin alone and with
// the other ways of building a reverse proxy on Node, in one run.
//
// Every server is its own process, and so is the load generator (autocannon, driven
// over IPC), so no two of them share an event loop. On a small machine they still share
// the cores: absolute figures say as much about the machine as about the proxy, which is
// why the report leads with ratios taken within each round. Targets run in a rotated
// order each round, so none is always measured first or last. See bench/README.md.

import { fork, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { LARGE_PATH, LARGE_SIZE, SMALL_BODY, startBackend, type Backend } from './backend.ts';
import { checkGoals, machineInfo, markdown, summarize, type Report, type RunResult, type Settings } from './report.ts';
import { SUBJECT, selectTargets, type RunningTarget, type TargetSpec } from './targets/index.ts';
import { treeCpuSeconds, treeRss } from './targets/process.ts';

const ROOT = resolve(import.meta.dirname, '..');

export interface BenchOptions {
  /** Measured rounds (default 5; --quick: 2). */
  rounds?: number;
  /** Seconds per measured run (default 4; --quick: 1). */
  duration?: number;
  /** autocannon connections (default 50). */
  connections?: number;
  /** Directory for the JSON and Markdown reports (default bench/results). */
  out?: string;
  /** A ~40 s smoke run: fewer, shorter rounds. */
  quick?: boolean;
  /** Seconds of unrecorded load per target and case before round 1 (default 3; --quick: 0.5). */
  warmup?: number;
  /** Target ids (default: every non-optional one; also $TANDEM_BENCH_TARGETS, comma-separated). */
  targets?: string[];
  /** Body case ids, `small` and `16k` (default both). */
  cases?: string[];
  /** Where progress lines go (default stdout). */
  log?: (line: string) => void;
}

/** What a run produced; `bench()` prints it, tests read it. */
export interface BenchOutcome {
  readonly report: Report;
  readonly jsonFile: string;
  readonly markdownFile: string;
}

interface BodyCase {
  readonly id: string;
  readonly path: string;
  readonly bodyBytes: number;
}

const CASES: readonly BodyCase[] = [
  { id: 'small', path: '/', bodyBytes: SMALL_BODY.length },
  { id: '16k', path: LARGE_PATH, bodyBytes: LARGE_SIZE },
];

/** Pause between runs: closing connections and a GC of the last run stay out of the next. */
const SETTLE_MS = 250;
const QUICK_SETTLE_MS = 100;

/** Runs the benchmark and resolves with the exit code: 0 done, 1 bad options, 2 failure. */
export async function bench(opts: BenchOptions = {}): Promise<number> {
  const log = opts.log ?? ((line: string) => process.stdout.write(line + '\n'));
  let outcome: BenchOutcome;
  try {
    outcome = await runBenchmark(opts);
  } catch (err) {
    if (err instanceof OptionError) {
      process.stderr.write(`bench: ${err.message}\n`);
      return 1;
    }
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    return 2;
  }
  log('');
  log(markdown(outcome.report));
  log(`report: ${outcome.jsonFile}`);
  log(`table:  ${outcome.markdownFile}`);
  return 0;
}

class OptionError extends Error {}

function positive(name: string, value: number | undefined, fallback: number, integer: boolean): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new OptionError(`--${name} must be a ${integer ? 'whole number' : 'number'} above 0 (got ${value})`);
  }
  return value;
}

/** Runs every target round by round and writes the reports; throws on any failure. */
export async function runBenchmark(opts: BenchOptions = {}): Promise<BenchOutcome> {
  const log = opts.log ?? ((line: string) => process.stdout.write(line + '\n'));
  const quick = opts.quick === true;
  // Many short rounds rather than few long ones: a burst of load from elsewhere on the
  // machine then spoils one round of a target, which the median drops.
  const rounds = positive('rounds', opts.rounds, quick ? 2 : 5, true);
  const duration = positive('duration', opts.duration, quick ? 1 : 4, false);
  const connections = positive('connections', opts.connections, 50, true);
  const warmup = opts.warmup ?? (quick ? 0.5 : 3);
  const settle = quick ? QUICK_SETTLE_MS : SETTLE_MS;
  const envTargets = process.env.TANDEM_BENCH_TARGETS?.split(',').map((s) => s.trim()).filter((s) => s !== '');
  let specs: TargetSpec[];
  try {
    specs = selectTargets(opts.targets ?? envTargets);
  } catch (err) {
    throw new OptionError((err as Error).message);
  }
  const cases = opts.cases === undefined ? [...CASES] : opts.cases.map((id) => {
    const c = CASES.find((x) => x.id === id);
    if (c === undefined) throw new OptionError(`unknown case '${id}' (known: ${CASES.map((x) => x.id).join(', ')})`);
    return c;
  });
  const outDir = resolve(opts.out ?? join(ROOT, 'bench/results'));

  const settings: Settings = {
    rounds,
    durationSeconds: duration,
    warmupSeconds: warmup,
    connections,
    pipelining: 1,
    subject: SUBJECT,
    targets: specs.map((t) => ({ id: t.id, label: t.label, description: t.description })),
    cases,
  };
  const machine = machineInfo(ROOT);
  const startedAt = new Date().toISOString();
  const totalRuns = rounds * cases.length * specs.length;
  const estimate = Math.round(cases.length * specs.length * (warmup > 0 ? warmup + settle / 1000 : 0)
    + totalRuns * (duration + settle / 1000) + 3);
  log(`bench: ${specs.length} targets × ${cases.length} cases × ${rounds} rounds of ${duration} s, `
    + `autocannon -c ${connections}; about ${estimate} s`);
  log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Node ${machine.node}, load ${machine.loadavg.join(' ')}`);

  const dir = mkdtempSync(join(tmpdir(), 'tandem-bench-'));
  let backend: Backend | null = null;
  const running = new Map<string, RunningTarget>();
  let loader: LoadGenerator | null = null;
  // Ctrl-C reaches the children through the process group; a plain SIGTERM to this
  // process alone would orphan them, so kill them on the way out.
  const onSignal = (signal: NodeJS.Signals) => {
    loader?.child.kill('SIGKILL');
    backend?.service.child.kill('SIGKILL');
    for (const t of running.values()) if (t.pid !== null && t.pid !== backend?.service.child.pid) process.kill(t.pid, 'SIGKILL');
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    backend = await startBackend(2);
    const ctx = { backend, dir };
    const started = await Promise.allSettled(specs.map(async (spec) => {
      const t = await spec.start(ctx);
      running.set(spec.id, t);
      return t;
    }));
    const failed = started.find((s) => s.status === 'rejected');
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
    for (const spec of specs) await checkTarget(spec, running.get(spec.id)!, cases);
    log(`started: backend ${backend.urls.join(' ')}; ${specs.map((s) => `${s.id} ${running.get(s.id)!.url}`).join(', ')}`);

    loader = await LoadGenerator.start();
    if (warmup > 0) {
      for (const c of cases) {
        for (const spec of specs) {
          const r = await loader.run(running.get(spec.id)!.url + c.path, connections, warmup);
          log(`warm-up  ${c.id.padEnd(5)} ${spec.label.padEnd(22)} ${fmtRps(r.rps)} req/s`);
          await sleep(settle);
        }
      }
    }

    const runs: RunResult[] = [];
    let n = 0;
    for (let round = 1; round <= rounds; round++) {
      const shift = (round - 1) % specs.length;
      const order = [...specs.slice(shift), ...specs.slice(0, shift)];
      for (const c of cases) {
        for (const [position, spec] of order.entries()) {
          const target = running.get(spec.id)!;
          const cpuBefore = target.pid === null ? Number.NaN : treeCpuSeconds(target.pid);
          const r = await loader.run(target.url + c.path, connections, duration);
          const cpu = target.pid === null ? Number.NaN : treeCpuSeconds(target.pid) - cpuBefore;
          const result: RunResult = {
            round,
            case: c.id,
            target: spec.id,
            position,
            ...r,
            rssBytes: target.pid === null ? 0 : treeRss(target.pid),
            cpuMicrosPerRequest: r.requests > 0 && cpu > 0 ? (cpu * 1e6) / r.requests : Number.NaN,
          };
          runs.push(result);
          n++;
          log(`[${String(n).padStart(String(totalRuns).length)}/${totalRuns}] round ${round}  ${c.id.padEnd(5)} ${spec.label.padEnd(22)} `
            + `${fmtRps(result.rps)} req/s  p50 ${result.latency.p50} ms  p90 ${result.latency.p90} ms  p99 ${result.latency.p99} ms  `
            + `errors ${result.errors + result.timeouts}  non-2xx ${result.non2xx}  CPU ${Number.isFinite(result.cpuMicrosPerRequest) ? Math.round(result.cpuMicrosPerRequest) : '-'} µs/req`);
          if (result.requests === 0) log(`  ${spec.id} answered nothing for ${duration} s: stuck, or the machine is overloaded`);
          await sleep(settle);
        }
      }
    }

    const caseReports = summarize(settings, runs);
    const report: Report = {
      schema: 'tandem-bench/1',
      startedAt,
      finishedAt: new Date().toISOString(),
      settings,
      machine,
      runs,
      cases: caseReports,
      goals: checkGoals(caseReports),
    };
    mkdirSync(outDir, { recursive: true });
    const stamp = startedAt.replace(/[:.]/g, '-');
    const jsonFile = join(outDir, `${stamp}.json`);
    const markdownFile = join(outDir, `${stamp}.md`);
    writeFileSync(jsonFile, JSON.stringify(report, null, 2) + '\n');
    writeFileSync(markdownFile, markdown(report));
    return { report, jsonFile, markdownFile };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await loader?.stop();
    await Promise.all([...running.values()].map((t) => t.stop().catch(() => undefined)));
    await backend?.service.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Fails early, before minutes of load, when a target answers wrongly. */
async function checkTarget(spec: TargetSpec, target: RunningTarget, cases: readonly BodyCase[]): Promise<void> {
  for (const c of cases) {
    const res = await fetch(target.url + c.path);
    const body = await res.arrayBuffer();
    if (res.status !== 200 || body.byteLength !== c.bodyBytes) {
      throw new Error(`${spec.id}: GET ${c.path} answered ${res.status} with ${body.byteLength} bytes, expected 200 with ${c.bodyBytes}`);
    }
  }
}

function fmtRps(v: number): string {
  return Math.round(v).toLocaleString('en-US').padStart(8);
}

// The load generator: autocannon in a child process of its own, driven over IPC, so it
// never shares an event loop with this process's bookkeeping or with a target.

type Measured = Omit<RunResult, 'round' | 'case' | 'target' | 'position' | 'rssBytes' | 'cpuMicrosPerRequest'>;

interface LoadRequest {
  readonly id: number;
  readonly url: string;
  readonly connections: number;
  readonly duration: number;
}

type LoadReply = { id: number; result: Measured } | { id: number; error: string };

class LoadGenerator {
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

  static async start(): Promise<LoadGenerator> {
    // execArgv: [] so that flags of this process (node --test, --cpu-prof) stay here.
    const child = fork(join(import.meta.dirname, 'run.ts'), ['--load-generator'], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`load generator exited (${code}) before it was ready`)));
    });
    return new LoadGenerator(child);
  }

  /** Load on `url` for `duration` seconds. */
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

type Autocannon = (opts: { url: string; connections: number; duration: number; pipelining: number }, cb: (err: Error | null, result: AutocannonResult) => void) => unknown;

function loadGeneratorMain(): void {
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
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

/** `npm run bench -- [--rounds N] [--duration S] [--connections N] [--out DIR] [--quick]`. */
async function cliMain(args: string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args,
      strict: true,
      options: {
        rounds: { type: 'string' }, duration: { type: 'string' }, connections: { type: 'string' },
        out: { type: 'string' }, quick: { type: 'boolean' },
      },
    }).values;
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    return 1;
  }
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  return bench({
    rounds: num(values.rounds), duration: num(values.duration), connections: num(values.connections),
    out: values.out, quick: values.quick === true,
  });
}

if (import.meta.main) {
  if (process.argv[2] === '--load-generator') loadGeneratorMain();
  else void cliMain(process.argv.slice(2)).then((code) => { process.exitCode = code; });
}
