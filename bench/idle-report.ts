// The idle-connections benchmark's results (bench/idle-connections.ts): the JSON
// report's shape, the medians over rounds per engine, the issue's goals checked
// against them, and the Markdown tables.

import type { HeapFigures } from './heap-probe.ts';
import type { Rollup } from './memory.ts';
import { median, type ReportFile } from './report.ts';

export const ENGINES = ['fast', 'node'] as const;
export type Engine = (typeof ENGINES)[number];

/** The issue's goal: this many idle connections under GOAL_MB of worker RSS. */
export const GOAL_CONNECTIONS = 10_000;
export const GOAL_MB = 100;

/** One process at one moment. */
export interface ProcessReading {
  readonly memory: Rollup;
  readonly fds: number;
}

/** One tandem run on one engine. */
export interface IdleRun {
  readonly round: number;
  readonly engine: Engine;
  readonly connections: number;
  /** Seconds to open, ask and be answered on all connections. */
  readonly openSeconds: number;
  readonly worker: { readonly before: ProcessReading; readonly after: ProcessReading; readonly heapBefore: HeapFigures | null; readonly heapAfter: HeapFigures | null };
  readonly controlPlane: { readonly before: ProcessReading; readonly after: ProcessReading };
  /**
   * KB per idle connection: worker RSS, anonymous memory, and after forced GC the V8 heap
   * in use and the anonymous memory outside V8's heap (native objects, buffers, what
   * malloc keeps); the last two null without heap figures.
   */
  readonly perConnectionKb: { readonly rss: number; readonly anon: number; readonly heap: number | null; readonly outsideHeap: number | null };
  /** tandem_listener_connections with all N open, or null where the engine does not report it. */
  readonly proxyCounted: number | null;
}

/** An engine's medians over the rounds (MB unless named KB). */
export interface EngineSummary {
  readonly engine: Engine;
  readonly rounds: number;
  readonly workerRssBefore: number;
  readonly workerRssAfter: number;
  readonly workerAnonBefore: number;
  readonly workerAnonAfter: number;
  readonly rssKb: number;
  /** Lowest and highest of the rounds' RSS per connection: the spread between runs. */
  readonly rssKbRange: readonly [number, number];
  readonly anonKb: number;
  readonly heapKb: number | null;
  readonly outsideHeapKb: number | null;
  readonly controlPlaneRssBefore: number;
  readonly controlPlaneRssAfter: number;
}

export interface IdleGoal {
  readonly goal: string;
  readonly measured: string;
  /** null: not decided, `undecided` says why. */
  readonly met: boolean | null;
  readonly undecided?: 'not run' | 'within noise';
}

export interface IdleSettings {
  /** What ran as tandem, relative to the repository: src/cli.ts or dist/cli.js. */
  readonly entry: string;
  readonly engines: readonly Engine[];
  readonly connections: number;
  readonly batch: number;
  /** Seconds of quiet between two batches (0: each batch right after the one before). */
  readonly pauseSeconds: number;
  readonly settleSeconds: number;
  readonly rounds: number;
  /** Whether the worker's heap was read after forced collections (bench/heap-probe.ts loaded). */
  readonly heap: boolean;
  readonly openFilesLimit: number;
}

export interface IdleReport extends ReportFile<'tandem-bench-idle/1', IdleSettings, IdleRun, IdleGoal> {
  readonly engines: readonly EngineSummary[];
}

const round2 = (v: number) => Math.round(v * 100) / 100;
const mb = (v: number) => v.toFixed(1);
const kb = (v: number | null) => (v === null ? '–' : v.toFixed(2));

/** KB per connection between two MB readings. */
export function perConnectionKb(beforeMb: number, afterMb: number, connections: number): number {
  return round2((afterMb - beforeMb) * 1024 / connections);
}

/** Medians per engine, in the order the engines were asked for. */
export function summarizeIdle(engines: readonly Engine[], runs: readonly IdleRun[]): EngineSummary[] {
  return engines.map((engine) => {
    const mine = runs.filter((r) => r.engine === engine);
    const med = (f: (r: IdleRun) => number) => round2(median(mine.map(f)));
    const medianOrNull = (values: (number | null)[]) => (values.some((v) => v === null) ? null : round2(median(values as number[])));
    const rss = mine.map((r) => r.perConnectionKb.rss);
    return {
      engine,
      rounds: mine.length,
      workerRssBefore: med((r) => r.worker.before.memory.rss),
      workerRssAfter: med((r) => r.worker.after.memory.rss),
      workerAnonBefore: med((r) => r.worker.before.memory.anon),
      workerAnonAfter: med((r) => r.worker.after.memory.anon),
      rssKb: med((r) => r.perConnectionKb.rss),
      rssKbRange: [Math.min(...rss), Math.max(...rss)],
      anonKb: med((r) => r.perConnectionKb.anon),
      heapKb: medianOrNull(mine.map((r) => r.perConnectionKb.heap)),
      outsideHeapKb: medianOrNull(mine.map((r) => r.perConnectionKb.outsideHeap)),
      controlPlaneRssBefore: med((r) => r.controlPlane.before.memory.rss),
      controlPlaneRssAfter: med((r) => r.controlPlane.after.memory.rss),
    };
  });
}

/** The issue's goals, from the medians of this run. */
export function idleGoals(connections: number, engines: readonly EngineSummary[]): IdleGoal[] {
  const goals: IdleGoal[] = [];
  const n = connections.toLocaleString('en-US');
  for (const e of engines) {
    const goal = `${e.engine}: ${GOAL_CONNECTIONS.toLocaleString('en-US')} idle keep-alive connections under ${GOAL_MB} MB of worker RSS`;
    const measured = `${mb(e.workerRssAfter)} MB with ${n} (${mb(e.workerRssBefore)} MB before them)`;
    goals.push(connections < GOAL_CONNECTIONS ? { goal, measured, met: null, undecided: 'not run' } : { goal, measured, met: e.workerRssAfter < GOAL_MB });
  }
  const fast = engines.find((e) => e.engine === 'fast');
  const node = engines.find((e) => e.engine === 'node');
  const goal = 'fast engine: worker RSS per idle connection no more than node:http\'s';
  if (fast === undefined || node === undefined) {
    goals.push({ goal, measured: 'needs both engines in one run', met: null, undecided: 'not run' });
    return goals;
  }
  const measured = `${kb(fast.rssKb)} KB (${kb(fast.rssKbRange[0])}–${kb(fast.rssKbRange[1])}) vs ${kb(node.rssKb)} KB (${kb(node.rssKbRange[0])}–${kb(node.rssKbRange[1])}), ${(fast.rssKb / node.rssKb).toFixed(2)}×`;
  // What the allocator keeps after a burst of connections differs from run to run of one
  // engine by several percent: a higher median whose rounds overlap node's is not "more".
  if (fast.rssKb <= node.rssKb) goals.push({ goal, measured, met: true });
  else if (fast.rssKbRange[0] <= node.rssKbRange[1]) goals.push({ goal, measured, met: null, undecided: 'within noise' });
  else goals.push({ goal, measured, met: false });
  return goals;
}

/** The report as Markdown: medians per engine, every run, the goals, the machine. */
export function idleMarkdown(report: IdleReport): string {
  const s = report.settings;
  const n = s.connections.toLocaleString('en-US');
  const lines = [
    `Medians of ${s.rounds} round${s.rounds === 1 ? '' : 's'}, MB unless KB:`, '',
    `| engine | worker RSS: before → ${n} idle | KB/conn (min–max) | worker anonymous | KB/conn | after GC, KB/conn: V8 heap | outside it | control plane RSS |`,
    '|---|--:|--:|--:|--:|--:|--:|--:|',
  ];
  for (const e of report.engines) {
    lines.push(`| ${e.engine} | ${mb(e.workerRssBefore)} → ${mb(e.workerRssAfter)} | ${kb(e.rssKb)} (${kb(e.rssKbRange[0])}–${kb(e.rssKbRange[1])}) | `
      + `${mb(e.workerAnonBefore)} → ${mb(e.workerAnonAfter)} | ${kb(e.anonKb)} | ${kb(e.heapKb)} | ${kb(e.outsideHeapKb)} | ${mb(e.controlPlaneRssBefore)} → ${mb(e.controlPlaneRssAfter)} |`);
  }
  lines.push('', 'Every run:', '',
    '| round | engine | worker RSS | KB/conn | anonymous | KB/conn | heap after GC | KB/conn | outside it, KB/conn | worker fds | control plane RSS | anonymous | counted | open s |',
    '|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
  for (const r of report.runs) {
    const w = r.worker;
    const heap = w.heapBefore === null || w.heapAfter === null ? '–' : `${mb(w.heapBefore.heapUsed)} → ${mb(w.heapAfter.heapUsed)}`;
    const c = r.controlPlane;
    lines.push(`| ${r.round} | ${r.engine} | ${mb(w.before.memory.rss)} → ${mb(w.after.memory.rss)} | ${kb(r.perConnectionKb.rss)} | `
      + `${mb(w.before.memory.anon)} → ${mb(w.after.memory.anon)} | ${kb(r.perConnectionKb.anon)} | ${heap} | ${kb(r.perConnectionKb.heap)} | ${kb(r.perConnectionKb.outsideHeap)} | `
      + `${w.before.fds} → ${w.after.fds} | ${mb(c.before.memory.rss)} → ${mb(c.after.memory.rss)} | ${mb(c.before.memory.anon)} → ${mb(c.after.memory.anon)} | `
      + `${r.proxyCounted ?? '–'} | ${r.openSeconds} |`);
  }
  lines.push('', '| goal | measured | met |', '|---|---|:-:|');
  for (const g of report.goals) lines.push(`| ${g.goal} | ${g.measured} | ${g.met === null ? g.undecided ?? 'not run' : g.met ? 'yes' : 'no'} |`);
  const m = report.machine;
  lines.push('', `${n} connections per run, opened ${s.batch} at a time${s.pauseSeconds > 0 ? `, ${s.pauseSeconds} s apart` : ''}, each after one request and its answer; readings after ${s.settleSeconds} s of quiet; `
    + `engines in a rotated order each round, each run a tandem of its own (from ${s.entry}${s.heap ? ', with bench/heap-probe.ts loaded' : ''}). `
    + '"counted" is tandem_listener_connections from the admin API with all connections open. '
    + `Machine: ${m.nproc} CPUs, ${m.cpuModel}, Linux ${m.kernel}, Node ${m.node}, load average at start ${m.loadavg.join(' / ')}; `
    + `tandem ${m.packages.tandem} (commit ${m.commit}${m.srcModified ? ' with uncommitted changes in src/' : ''}). Run ${report.startedAt} – ${report.finishedAt}.`, '');
  return lines.join('\n');
}
