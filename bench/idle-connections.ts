// What idle keep-alive client connections cost tandem's worker, per listener engine.
// Each run is a `tandem run --workers 1` of its own (one pool of one backend, admin API
// on, the listener's engine set and its keep-alive timeout raised to 10 minutes so that
// nothing closes while it is measured). It opens N client connections
// (bench/idle-clients.ts: node:net, one raw HTTP/1.1 request each, its whole answer read,
// then held idle; `--batch` at a time) and reads the worker and the control plane from
// /proc/PID/smaps_rollup before and with all N open, after `--settle` seconds of quiet
// each time, then the worker's heap after two forced collections (bench/heap-probe.ts).
// Per connection: (with N − before) ÷ N. Before is read after a warm-up batch of
// connections has come and gone, so code the first requests load or compile is in both
// readings. Engines run in a rotated order, `--rounds` times; the report gives medians.
//
//   npm run bench:idle                                  # 10,000 connections, both engines, 3 rounds
//   npm run bench:idle -- --engine node --connections 2000 --rounds 1
//   node bench/idle-connections.ts --engine both --connections 10000 --batch 500 --settle 5 --out /tmp/idle
//   npm run bench:idle -- --pause 1                     # a batch a second: connections that arrive over time
//   npm run build && TANDEM_CLI=dist/cli.js npm run bench:idle -- --no-heap   # as a package runs
//
// A process that runs TypeScript holds Node's type stripper: tandem run from src/, and
// any process the heap probe (a .ts file) is loaded into. An installed package runs
// dist/ without it: for the worker's RSS as users see it, use dist/ and --no-heap. The
// cost per connection is the same either way.
//
// Each side holds N sockets, so this process and tandem's worker need an open-files
// limit above N: below it, the bench raises its own (and so its children's) limit with
// util-linux's `prlimit` where it may (root with CAP_SYS_RESOURCE), or stops and says
// to run `ulimit -n 65536` first.

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startBackend } from '../test/helpers/backends.ts';
import { singlePool } from '../test/helpers/config.ts';
import { CLI, NODE, startTandem, type TandemProcess } from '../test/helpers/tandem.ts';
import { readHeap } from './heap-probe.ts';
import { IdleClients } from './idle-clients.ts';
import { rollup } from './memory.ts';
import { ENGINES, idleGoals, idleMarkdown, perConnectionKb, summarizeIdle, type Engine, type IdleReport, type IdleRun, type IdleSettings, type ProcessReading } from './idle-report.ts';
import { machineInfo } from './report.ts';

const ROOT = resolve(import.meta.dirname, '..');
const PROBE = join(import.meta.dirname, 'heap-probe.ts');
/** What runs as tandem: src/cli.ts, or with TANDEM_CLI=dist/cli.js the JavaScript a package ships. */
const ENTRY = resolve(process.env.TANDEM_CLI ?? CLI);
/** A deadline per batch, not a figure: a busy 2-core machine can be slow to accept. */
const BATCH_TIMEOUT_MS = 60_000;
/** File descriptors each process needs beyond one per connection (its own files, upstream connections). */
const FD_MARGIN = 1024;

/** The settings a run records, less what it finds out itself, and where the report goes. */
export interface IdleOptions extends Omit<IdleSettings, 'entry' | 'openFilesLimit'> {
  readonly out: string;
  readonly log?: (line: string) => void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function fds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function reading(pid: number): ProcessReading {
  return { memory: rollup(pid), fds: fds(pid) };
}

function hardLimit(): string {
  return readFileSync('/proc/self/limits', 'utf8').match(/^Max open files\s+\S+\s+(\S+)/m)?.[1] ?? 'unknown';
}

/** The soft open-files limit of a process (Node raises its own to the hard limit as it starts). */
export function openFilesLimit(pid: number | 'self' = 'self'): number {
  const m = readFileSync(`/proc/${pid}/limits`, 'utf8').match(/^Max open files\s+(\d+|unlimited)/m);
  return m === null || m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
}

/**
 * Makes sure this process (and so tandem, its child) may open `need` files: raises the
 * limit with prlimit where it is too low and that is allowed. Returns the limit, or the
 * reason it is too low.
 */
function ensureOpenFiles(need: number): { limit: number } | { reason: string } {
  const limit = openFilesLimit();
  if (limit >= need) return { limit };
  const nrOpen = Number(readFileSync('/proc/sys/fs/nr_open', 'utf8'));
  const want = Math.min(Math.max(need, 65_536), nrOpen);
  try {
    // Node cannot set rlimits itself; prlimit sets this running process's (children inherit it).
    execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${want}:${want}`], { stdio: 'ignore' });
  } catch {
    // Not installed, or not allowed to raise the hard limit: say what to do below.
  }
  const now = openFilesLimit();
  if (now >= need) return { limit: now };
  return { reason: `the open-files limit is ${limit} (hard limit ${hardLimit()}) and ${need} are needed (${need - FD_MARGIN} connections on each side, and margin); `
    + 'raise it in the shell first, `ulimit -n 65536` (raising the hard limit needs root with CAP_SYS_RESOURCE; prlimit from util-linux was tried), or ask for fewer --connections' };
}

/** The sum of tandem_listener_connections in a Prometheus scrape, or null if absent. */
async function proxyCounted(admin: string | null): Promise<number | null> {
  if (admin === null) return null;
  try {
    const text = await (await fetch(`${admin}/metrics`)).text();
    const values = [...text.matchAll(/^tandem_listener_connections\{[^}]*\}\s+(\d+)/gm)].map((m) => Number(m[1]));
    return values.length === 0 ? null : values.reduce((a, b) => a + b, 0);
  } catch {
    return null;
  }
}

/** Waits until the worker holds at most `fdLimit` descriptors (closed connections released), bounded. */
async function waitForFds(pid: number, fdLimit: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (fds(pid) > fdLimit && Date.now() < deadline) await sleep(100);
}

/** One tandem run on one engine: readings before and with all connections idle. */
async function measureEngine(engine: Engine, round: number, opts: IdleOptions, log: (line: string) => void): Promise<IdleRun> {
  const backend = await startBackend({ name: 'origin' });
  const probeDir = mkdtempSync(join(tmpdir(), 'tandem-idle-heap-'));
  // Few upstream connections, whatever the engine's pool would open for a batch of
  // concurrent requests: the figure is the client side's, and the warm-up opens them.
  const yaml = singlePool([{ name: 'origin', url: backend.url, maxConnections: 16 }], {}, {
    listeners: [{ name: 'web', address: '127.0.0.1:0', engine, timeouts: { keepAlive: '10m' } }],
  });
  let t: TandemProcess | null = null;
  let clients: IdleClients | null = null;
  try {
    t = await startTandem(yaml, opts.heap
      ? { command: [NODE, '--expose-gc', '--import', PROBE, ENTRY], env: { TANDEM_HEAP_PROBE_DIR: probeDir } }
      : { command: [NODE, ENTRY] });
    const port = Number(t.url.slice(t.url.lastIndexOf(':') + 1));
    clients = new IdleClients(port);
    await t.waitForLine((l) => l.event === 'worker-start', { from: 0 });
    const primary = t.child.pid!;
    const worker = t.workerPids()[0];
    const workerLimit = openFilesLimit(worker);
    if (workerLimit < opts.connections + 64) throw new Error(`tandem's worker may open ${workerLimit} files, fewer than ${opts.connections} connections need`);

    const fdsIdle = fds(worker);
    const warm = new IdleClients(port);
    const warmCount = Math.min(opts.batch, opts.connections);
    await warm.open(warmCount, warmCount, BATCH_TIMEOUT_MS);
    await warm.close();
    await waitForFds(worker, fdsIdle + 32, 10_000);
    await sleep(opts.settleSeconds * 1000);
    const before = { worker: reading(worker), primary: reading(primary) };
    const heapBefore = opts.heap ? await readHeap(worker, probeDir) : null;

    log(`round ${round}, ${engine}: opening ${opts.connections} connections, ${opts.batch} at a time`);
    const started = performance.now();
    await clients.open(opts.connections, opts.batch, BATCH_TIMEOUT_MS, opts.pauseSeconds * 1000);
    const openSeconds = Math.round((performance.now() - started) / 10) / 100;
    await sleep(opts.settleSeconds * 1000);
    const after = { worker: reading(worker), primary: reading(primary) };
    const counted = await proxyCounted(t.admin);
    const heapAfter = opts.heap ? await readHeap(worker, probeDir) : null;
    if (clients.closed > 0) throw new Error(`${clients.closed} of ${opts.connections} connections were closed before they were measured: the figures would not be for idle open connections`);
    if (clients.unexpectedBytes > 0) throw new Error(`${clients.unexpectedBytes} bytes arrived on idle connections after their answer`);

    const n = opts.connections;
    const run: IdleRun = {
      round,
      engine,
      connections: n,
      openSeconds,
      worker: { before: before.worker, after: after.worker, heapBefore, heapAfter },
      controlPlane: { before: before.primary, after: after.primary },
      perConnectionKb: {
        rss: perConnectionKb(before.worker.memory.rss, after.worker.memory.rss, n),
        anon: perConnectionKb(before.worker.memory.anon, after.worker.memory.anon, n),
        heap: heapBefore === null || heapAfter === null ? null : perConnectionKb(heapBefore.heapUsed, heapAfter.heapUsed, n),
        // Both from the probe's one reading after GC: anonymous memory less V8's whole heap.
        outsideHeap: heapBefore === null || heapAfter === null ? null
          : perConnectionKb(heapBefore.anon - heapBefore.heapTotal, heapAfter.anon - heapAfter.heapTotal, n),
      },
      proxyCounted: counted,
    };
    log(`round ${round}, ${engine}: worker RSS ${before.worker.memory.rss} -> ${after.worker.memory.rss} MB, ${run.perConnectionKb.rss} KB per connection`);
    return run;
  } finally {
    await clients?.close();
    await t?.stop();
    await backend.close();
    rmSync(probeDir, { recursive: true, force: true });
  }
}

/** Runs the engines in turn, round by round in a rotated order, and writes `idle-<start>.json` and `.md` into `out`. */
export async function runIdle(opts: IdleOptions): Promise<{ report: IdleReport; jsonFile: string; markdownFile: string }> {
  const log = opts.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  if (opts.connections > high - low - FD_MARGIN) throw new Error(`${opts.connections} connections from one address need more local ports than ${low}-${high} leaves`);
  const fdLimit = ensureOpenFiles(opts.connections + FD_MARGIN);
  if ('reason' in fdLimit) throw new Error(fdLimit.reason);
  const startedAt = new Date().toISOString();
  const machine = machineInfo(ROOT);
  const runs: IdleRun[] = [];
  for (let round = 1; round <= opts.rounds; round++) {
    // Rotated, so that neither engine always runs first (or right after the other) on a machine whose memory state drifts.
    const order = opts.engines.map((_, i) => opts.engines[(i + round - 1) % opts.engines.length]);
    for (const engine of order) runs.push(await measureEngine(engine, round, opts, log));
  }
  const engines = summarizeIdle(opts.engines, runs);
  const report: IdleReport = {
    schema: 'tandem-bench-idle/1',
    startedAt,
    finishedAt: new Date().toISOString(),
    settings: {
      entry: relative(ROOT, ENTRY), engines: opts.engines, connections: opts.connections, batch: opts.batch, pauseSeconds: opts.pauseSeconds,
      settleSeconds: opts.settleSeconds, rounds: opts.rounds, heap: opts.heap, openFilesLimit: fdLimit.limit,
    },
    machine,
    runs,
    engines,
    goals: idleGoals(opts.connections, engines),
  };
  mkdirSync(opts.out, { recursive: true });
  const stamp = startedAt.replace(/[:.]/g, '-');
  const jsonFile = join(opts.out, `idle-${stamp}.json`);
  const markdownFile = join(opts.out, `idle-${stamp}.md`);
  writeFileSync(jsonFile, JSON.stringify(report, null, 2) + '\n');
  writeFileSync(markdownFile, idleMarkdown(report));
  return { report, jsonFile, markdownFile };
}

/** `npm run bench:idle -- [--engine fast|node|both] [--connections N] [--rounds N] [--batch N] [--pause S] [--settle S] [--no-heap] [--out DIR]`; exit 1 on bad input, 2 on a failed run. */
async function cliMain(args: string[]): Promise<number> {
  let opts: IdleOptions;
  try {
    const { values } = parseArgs({
      args,
      strict: true,
      allowNegative: true,
      options: {
        engine: { type: 'string', default: 'both' }, connections: { type: 'string', default: '10000' }, rounds: { type: 'string', default: '3' },
        heap: { type: 'boolean', default: true },
        batch: { type: 'string', default: '500' }, pause: { type: 'string', default: '0' }, settle: { type: 'string', default: '5' }, out: { type: 'string', default: join(ROOT, 'bench/results') },
      },
    });
    const whole = (name: string, v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a whole number above 0 (got ${v})`);
      return n;
    };
    if (values.engine !== 'both' && !ENGINES.includes(values.engine as Engine)) throw new Error(`--engine must be fast, node or both (got ${values.engine})`);
    const seconds = (name: string, v: string) => {
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a number of seconds (got ${v})`);
      return n;
    };
    opts = {
      engines: values.engine === 'both' ? [...ENGINES] : [values.engine as Engine],
      connections: whole('connections', values.connections),
      batch: whole('batch', values.batch),
      pauseSeconds: seconds('pause', values.pause),
      settleSeconds: seconds('settle', values.settle),
      rounds: whole('rounds', values.rounds),
      heap: values.heap,
      out: resolve(values.out),
    };
  } catch (err) {
    process.stderr.write(`bench:idle: ${(err as Error).message}\n`);
    return 1;
  }
  try {
    const { report, jsonFile, markdownFile } = await runIdle(opts);
    process.stdout.write(idleMarkdown(report) + `\nwritten to ${jsonFile} and ${markdownFile}\n`);
    return 0;
  } catch (err) {
    process.stderr.write(`bench:idle: ${(err as Error).message}\n`);
    return 2;
  }
}

if (import.meta.main) process.exitCode = await cliMain(process.argv.slice(2));
