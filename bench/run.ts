// `npm run bench`: tandem side by side with the origin alone and with
// the other ways of building a reverse proxy on Node, in one run.
//
// Every server is its own process, and so is the load generator (autocannon driven over
// IPC, or wrk), so no two of them share an event loop. On a small machine they still share
// the cores: absolute figures say as much about the machine as about the proxy, which is
// why the report leads with ratios taken within each round. Targets run in a rotated
// order each round, so none is always measured first or last. See bench/README.md.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { LARGE_PATH, LARGE_SIZE, SMALL_BODY, startBackend, type Backend } from './backend.ts';
import { LOADS, loadMissing, startLoad, type LoadGenerator, type LoadId } from './load.ts';
import { checkGoals, goalLines, machineInfo, markdown, summarize, type Report, type RunResult, type Settings } from './report.ts';
import { SUBJECT, selectTargets, type RunningTarget, type TargetSpec } from './targets/index.ts';
import { treeCpuSeconds, treeRss } from './targets/process.ts';

const ROOT = resolve(import.meta.dirname, '..');

export interface BenchOptions {
  /** Measured rounds (default 5; --quick: 2). */
  rounds?: number;
  /** Seconds per measured run (default 4; --quick: 1). */
  duration?: number;
  /** Connections of the load generator (default 50). */
  connections?: number;
  /** Load generator: autocannon (default), wrk, or both, each on every target and case. */
  load?: LoadId | 'both';
  /** Directory for the JSON and Markdown reports (default bench/results). */
  out?: string;
  /** A ~1 minute smoke run: fewer, shorter rounds. */
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
  log('Goals of issue 16 (never fail the run):');
  for (const line of goalLines(outcome.report, 16)) log(`  ${line}`);
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
  const load = opts.load ?? 'autocannon';
  if (load !== 'both' && !LOADS.includes(load)) throw new OptionError(`--load must be autocannon, wrk or both (got ${load})`);
  // A program this machine lacks skips its target or load generator, with the reason.
  const skipped: { id: string; reason: string }[] = [];
  specs = specs.filter((spec) => {
    const reason = spec.missing?.() ?? null;
    if (reason !== null) skipped.push({ id: spec.id, reason });
    return reason === null;
  });
  const loads = (load === 'both' ? [...LOADS] : [load]).filter((id) => {
    const reason = loadMissing(id);
    if (reason !== null) skipped.push({ id, reason });
    return reason === null;
  });
  for (const s of skipped) log(`skipped ${s.id}: ${s.reason}`);
  if (loads.length === 0) throw new OptionError(`no load generator left to run: ${skipped.map((s) => s.reason).join('; ')}`);
  if (specs.length === 0) throw new OptionError('no target left to run');
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
    loads,
    targets: specs.map((t) => ({ id: t.id, label: t.label, description: t.description })),
    skipped,
    cases,
  };
  const machine = machineInfo(ROOT);
  const startedAt = new Date().toISOString();
  const totalRuns = rounds * loads.length * cases.length * specs.length;
  const estimate = Math.round(cases.length * specs.length * (warmup > 0 ? warmup + settle / 1000 : 0)
    + totalRuns * (duration + settle / 1000) + 3);
  log(`bench: ${specs.length} targets × ${cases.length} cases × ${loads.length} load generator${loads.length === 1 ? '' : 's'} × ${rounds} rounds of ${duration} s, `
    + `${loads.join(' and ')} -c ${connections}; about ${estimate} s`);
  log(`machine: ${machine.nproc} CPUs, ${machine.cpuModel}, Node ${machine.node}, load ${machine.loadavg.join(' ')}`);

  const dir = mkdtempSync(join(tmpdir(), 'tandem-bench-'));
  let backend: Backend | null = null;
  const running = new Map<string, RunningTarget>();
  const loaders: LoadGenerator[] = [];
  // Ctrl-C reaches the children through the process group; a plain SIGTERM to this
  // process alone would orphan them, so end them on the way out. Targets get SIGTERM, not
  // SIGKILL: nginx's master and tandem's primary then take their workers with them.
  const onSignal = (signal: NodeJS.Signals) => {
    for (const l of loaders) l.kill();
    backend?.service.child.kill('SIGKILL');
    for (const t of running.values()) if (t.pid !== null && t.pid !== backend?.service.child.pid) process.kill(t.pid, 'SIGTERM');
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

    for (const id of loads) loaders.push(await startLoad(id, dir));
    // The JIT does not care which client sends the load: the first generator warms up alone.
    if (warmup > 0) {
      for (const c of cases) {
        for (const spec of specs) {
          const r = await loaders[0].run(running.get(spec.id)!.url + c.path, connections, warmup);
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
      for (const loader of loaders) for (const c of cases) {
        for (const [position, spec] of order.entries()) {
          const target = running.get(spec.id)!;
          const cpuBefore = target.pid === null ? Number.NaN : treeCpuSeconds(target.pid);
          const r = await loader.run(target.url + c.path, connections, duration);
          const cpu = target.pid === null ? Number.NaN : treeCpuSeconds(target.pid) - cpuBefore;
          const result: RunResult = {
            round,
            case: c.id,
            load: loader.id,
            target: spec.id,
            position,
            ...r,
            rssBytes: target.pid === null ? 0 : treeRss(target.pid),
            cpuMicrosPerRequest: r.requests > 0 && cpu > 0 ? (cpu * 1e6) / r.requests : Number.NaN,
          };
          runs.push(result);
          n++;
          log(`[${String(n).padStart(String(totalRuns).length)}/${totalRuns}] round ${round}  ${loads.length > 1 ? `${loader.id.padEnd(10)} ` : ''}${c.id.padEnd(5)} ${spec.label.padEnd(22)} `
            + `${fmtRps(result.rps)} req/s  p50 ${fmtMs(result.latency.p50)} ms  p90 ${fmtMs(result.latency.p90)} ms  p99 ${fmtMs(result.latency.p99)} ms  `
            + `errors ${result.errors + result.timeouts}  non-2xx ${result.non2xx}  CPU ${Number.isFinite(result.cpuMicrosPerRequest) ? Math.round(result.cpuMicrosPerRequest) : '-'} µs/req`);
          if (result.requests === 0) log(`  ${spec.id} answered nothing for ${duration} s: stuck, or the machine is overloaded`);
          await sleep(settle);
        }
      }
    }

    const caseReports = summarize(settings, runs);
    const report: Report = {
      schema: 'tandem-bench/2',
      startedAt,
      finishedAt: new Date().toISOString(),
      settings,
      machine,
      runs,
      cases: caseReports,
      goals: checkGoals(caseReports, SUBJECT),
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
    for (const l of loaders) await l.stop();
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

/** wrk's latencies have µs resolution, autocannon's whole ms. */
function fmtMs(v: number): string {
  return String(Math.round(v * 100) / 100);
}

/** `npm run bench -- [--rounds N] [--duration S] [--connections N] [--load autocannon|wrk|both] [--targets a,b] [--out DIR] [--quick]`. */
async function cliMain(args: string[]): Promise<number> {
  let values;
  try {
    values = parseArgs({
      args,
      strict: true,
      options: {
        rounds: { type: 'string' }, duration: { type: 'string' }, connections: { type: 'string' },
        load: { type: 'string' }, out: { type: 'string' }, quick: { type: 'boolean' }, targets: { type: 'string' },
      },
    }).values;
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    return 1;
  }
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  return bench({
    rounds: num(values.rounds), duration: num(values.duration), connections: num(values.connections),
    load: values.load as LoadId | 'both' | undefined, out: values.out, quick: values.quick === true,
    targets: values.targets?.split(',').map((s) => s.trim()).filter((s) => s !== ''),
  });
}

if (import.meta.main) void cliMain(process.argv.slice(2)).then((code) => { process.exitCode = code; });
