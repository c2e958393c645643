// The benchmark's results: the JSON report's shape, the per-round ratios and their
// medians, the issues' goals checked against them, and the Markdown table.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, release, totalmem } from 'node:os';
import { join } from 'node:path';

/** One load run (autocannon or wrk) of one target on one body case. */
export interface RunResult {
  /** 1-based; warm-up runs are not recorded. */
  readonly round: number;
  readonly case: string;
  /** The load generator: `autocannon` or `wrk`. */
  readonly load: string;
  readonly target: string;
  /** Place of this target in its round's order, 0-based. */
  readonly position: number;
  readonly durationSeconds: number;
  /** Completed requests per second: total responses / duration. */
  readonly rps: number;
  readonly requests: number;
  /** Response bytes per second as the load generator counted them. */
  readonly bytesPerSecond: number;
  /** Milliseconds: whole ms below 1 s from autocannon, µs resolution from wrk. */
  readonly latency: { readonly p50: number; readonly p90: number; readonly p99: number; readonly mean: number; readonly max: number };
  /** Connection errors (resets, refusals), timeouts and answers outside 2xx (wrk: 400 and above). */
  readonly errors: number;
  readonly timeouts: number;
  readonly non2xx: number;
  /** RSS of the target's process tree right after the run; 0 when unknown. */
  readonly rssBytes: number;
  /**
   * CPU time the target's process tree used during the run per request served, in µs;
   * NaN (null in JSON) when unknown. Other load on the machine moves it far less than rps.
   */
  readonly cpuMicrosPerRequest: number;
}

/** Medians over rounds for one target on one case. */
export interface TargetSummary {
  readonly target: string;
  readonly label: string;
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly errors: number;
  readonly timeouts: number;
  readonly non2xx: number;
  readonly rssBytes: number;
  readonly cpuMicrosPerRequest: number;
  /** rps of each round, in round order. */
  readonly rpsByRound: readonly number[];
}

/** The subject against one other target: per-round quotients and their median. */
export interface Ratio {
  readonly target: string;
  /** Median over rounds of subject rps / target rps. */
  readonly rps: number;
  readonly rpsByRound: readonly number[];
  /** Median over rounds of subject p99 / target p99; below 1 is better. */
  readonly p99: number;
  readonly p99ByRound: readonly number[];
  /** Median over rounds of subject CPU per request / target CPU per request; below 1 is cheaper. */
  readonly cpu: number;
  readonly cpuByRound: readonly number[];
}

/** One body case under one load generator. */
export interface CaseReport {
  readonly id: string;
  readonly load: string;
  readonly path: string;
  readonly bodyBytes: number;
  readonly targets: readonly TargetSummary[];
  /** The subject against every other target of this case. */
  readonly ratios: readonly Ratio[];
}

/** One of the issues' performance goals as this run measured it. */
export interface GoalCheck {
  /** The issue that set the goal. */
  readonly issue: number;
  readonly case: string;
  readonly load: string;
  readonly goal: string;
  /** The median per-round ratio of the subject to the other target. */
  readonly measured: number;
  readonly bound: number;
  /** The two medians behind the ratio, for a reader; empty when not run. */
  readonly figures: string;
  /** null: a target it needs was not run, or its figure could not be read. */
  readonly met: boolean | null;
}

export interface MachineInfo {
  readonly nproc: number;
  readonly cpuModel: string;
  readonly memoryBytes: number;
  readonly kernel: string;
  readonly node: string;
  /** Load average (1, 5, 15 min) when the run started: anything else running skews it. */
  readonly loadavg: readonly number[];
  readonly packages: Readonly<Record<string, string>>;
  readonly commit: string;
  /** Files under src/ differ from the commit: the run measured a working tree. */
  readonly srcModified: boolean;
}

export interface Settings {
  readonly rounds: number;
  readonly durationSeconds: number;
  readonly warmupSeconds: number;
  readonly connections: number;
  readonly pipelining: number;
  readonly subject: string;
  /** Load generators, each run on every target and case. */
  readonly loads: readonly string[];
  readonly targets: readonly { readonly id: string; readonly label: string; readonly description: string }[];
  /** Targets and load generators asked for but not installed here, and why. */
  readonly skipped: readonly { readonly id: string; readonly reason: string }[];
  readonly cases: readonly { readonly id: string; readonly path: string; readonly bodyBytes: number }[];
}

/** What every benchmark's JSON report holds around its own figures. */
export interface ReportFile<Schema extends string, S, R, G> {
  readonly schema: Schema;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly settings: S;
  readonly machine: MachineInfo;
  readonly runs: readonly R[];
  readonly goals: readonly G[];
}

export interface Report extends ReportFile<'tandem-bench/2', Settings, RunResult, GoalCheck> {
  readonly cases: readonly CaseReport[];
}

/** The median; the mean of the middle two for an even count; NaN for none. */
export function median(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return Number.NaN;
  const s = [...finite].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Medians per target and the subject's ratios, for every load generator and case of the settings. */
export function summarize(settings: Settings, runs: readonly RunResult[]): CaseReport[] {
  return settings.loads.flatMap((load) => settings.cases.map((c) => {
    const ofCase = runs.filter((r) => r.case === c.id && r.load === load);
    const targets = settings.targets.map((t): TargetSummary => {
      const mine = ofCase.filter((r) => r.target === t.id).sort((a, b) => a.round - b.round);
      return {
        target: t.id,
        label: t.label,
        rps: median(mine.map((r) => r.rps)),
        p50: median(mine.map((r) => r.latency.p50)),
        p90: median(mine.map((r) => r.latency.p90)),
        p99: median(mine.map((r) => r.latency.p99)),
        errors: sum(mine.map((r) => r.errors)),
        timeouts: sum(mine.map((r) => r.timeouts)),
        non2xx: sum(mine.map((r) => r.non2xx)),
        rssBytes: Math.max(0, ...mine.map((r) => r.rssBytes)),
        cpuMicrosPerRequest: median(mine.map((r) => r.cpuMicrosPerRequest)),
        rpsByRound: mine.map((r) => r.rps),
      };
    });
    const ratios: Ratio[] = [];
    if (settings.targets.some((t) => t.id === settings.subject)) {
      for (const t of settings.targets) {
        if (t.id === settings.subject) continue;
        const rpsByRound: number[] = [];
        const p99ByRound: number[] = [];
        const cpuByRound: number[] = [];
        // Quotients are taken within a round, where both ran minutes apart at most, so
        // a slow drift of the machine cancels out; the median drops one odd round.
        for (let round = 1; round <= settings.rounds; round++) {
          const s = ofCase.find((r) => r.round === round && r.target === settings.subject);
          const o = ofCase.find((r) => r.round === round && r.target === t.id);
          if (s === undefined || o === undefined) continue;
          rpsByRound.push(s.rps / o.rps);
          p99ByRound.push(s.latency.p99 / o.latency.p99);
          cpuByRound.push(s.cpuMicrosPerRequest / o.cpuMicrosPerRequest);
        }
        ratios.push({
          target: t.id, rps: median(rpsByRound), rpsByRound, p99: median(p99ByRound), p99ByRound, cpu: median(cpuByRound), cpuByRound,
        });
      }
    }
    return { id: c.id, load, path: c.path, bodyBytes: c.bodyBytes, targets, ratios };
  }));
}

/** The issues' targets, as ratios measured in the same run. */
export function checkGoals(cases: readonly CaseReport[], subjectId: string): GoalCheck[] {
  const out: GoalCheck[] = [];
  for (const c of cases) {
    const subject = c.targets.find((t) => t.target === subjectId);
    const check = (issue: number, id: string, metric: 'rps' | 'p99' | 'cpu', bound: number, goal: string) => {
      const r = c.ratios.find((x) => x.target === id);
      const other = c.targets.find((t) => t.target === id);
      const measured = r === undefined ? Number.NaN : r[metric];
      const met = !Number.isFinite(measured) ? null : metric === 'rps' ? measured >= bound : measured <= bound;
      const figures = subject === undefined || r === undefined || other === undefined ? '' : `${figure(subject, metric)} vs ${figure(other, metric)}`;
      out.push({ issue, case: c.id, load: c.load, goal, bound, measured, figures, met });
    };
    check(6, 'http-proxy-3', 'rps', 2.2, 'req/s ≥ 2.2 × http-proxy-3');
    check(6, 'fastify-http-proxy', 'rps', 1.5, 'req/s ≥ 1.5 × @fastify/http-proxy');
    check(6, 'undici-floor', 'rps', 0.9, 'req/s within 10% of the bare undici floor');
    // Features off through the same `tandem run` process model, so the check measures the
    // features and not the primary/worker split as well (tandem-bare drops both).
    check(6, 'tandem-min', 'rps', 0.9, 'features on within 10% of features off');
    check(6, 'http-proxy-3', 'p99', 1, 'p99 no worse than http-proxy-3');
    check(6, 'fastify-http-proxy', 'p99', 1, 'p99 no worse than @fastify/http-proxy');
    check(16, 'haproxy', 'cpu', 2, 'CPU per request ≤ 2 × HAProxy\'s');
    check(16, 'haproxy', 'p99', 2, 'p99 ≤ 2 × HAProxy\'s');
    for (const id of ['undici-floor', 'fastify-http-proxy', 'http-proxy-3']) {
      check(16, id, 'rps', 1.5, `req/s ≥ 1.5 × ${c.targets.find((t) => t.target === id)?.label ?? id}`);
    }
  }
  return out;
}

function figure(t: TargetSummary, metric: 'rps' | 'p99' | 'cpu'): string {
  if (metric === 'rps') return `${Number.isFinite(t.rps) ? int.format(t.rps) : '–'} req/s`;
  if (metric === 'p99') return `${fmtMs(t.p99)} ms`;
  return `${Number.isFinite(t.cpuMicrosPerRequest) ? int.format(t.cpuMicrosPerRequest) : '–'} µs`;
}

/** The goals of one issue as plain lines, for the end of the console output. */
export function goalLines(report: Report, issue: number): string[] {
  return report.goals.filter((g) => g.issue === issue).map((g) => `${g.case}, ${g.load}: tandem ${g.goal}: `
    + (g.met === null ? 'not run' : `${fmtRatio(g.measured)} (${g.figures}): ${g.met ? 'met' : 'not met'}`));
}

function sum(values: readonly number[]): number {
  let s = 0;
  for (const v of values) s += v;
  return s;
}

const PACKAGES = ['autocannon', 'undici', 'http-proxy-3', 'fastify', '@fastify/http-proxy', '@fastify/reply-from', 'prom-client'];

/** Where and with what this run happened. */
export function machineInfo(root: string): MachineInfo {
  const packages: Record<string, string> = {};
  const version = (dir: string) => (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  try {
    packages.tandem = version(root);
  } catch {
    packages.tandem = 'unknown';
  }
  for (const p of PACKAGES) {
    try {
      packages[p] = version(join(root, 'node_modules', p));
    } catch {
      packages[p] = 'not installed';
    }
  }
  // @fastify/reply-from brings its own undici major; say which one it ran on.
  for (const dir of ['node_modules/@fastify/reply-from/node_modules/undici', 'node_modules/@fastify/http-proxy/node_modules/undici']) {
    try {
      packages['undici (of @fastify/reply-from)'] = version(join(root, dir));
      break;
    } catch {
      // Not nested there: reply-from uses the top-level undici.
    }
  }
  let cpuModel = cpus()[0]?.model ?? 'unknown';
  try {
    const m = readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m);
    if (m !== null) cpuModel = m[1].trim();
  } catch {
    // Not Linux: os.cpus() is as good as it gets.
  }
  let commit = 'unknown';
  let srcModified = false;
  try {
    const git = (...args: string[]) => execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    commit = git('rev-parse', '--short', 'HEAD');
    srcModified = git('status', '--porcelain', '--', 'src') !== '';
  } catch {
    // Not a git checkout.
  }
  return {
    nproc: availableParallelism(),
    cpuModel,
    memoryBytes: totalmem(),
    kernel: release(),
    node: process.version,
    loadavg: loadavg().map((v) => Math.round(v * 100) / 100),
    packages,
    commit,
    srcModified,
  };
}

const int = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

function fmtRatio(v: number): string {
  return Number.isFinite(v) ? `${v.toFixed(2)}×` : '–';
}

function fmtMs(v: number): string {
  return Number.isFinite(v) ? String(Math.round(v * 10) / 10) : '–';
}

/** The report as Markdown: one table per body case, the goals, then machine and settings. */
export function markdown(report: Report): string {
  const s = report.settings;
  const m = report.machine;
  const subject = s.targets.find((t) => t.id === s.subject)?.label ?? s.subject;
  const lines: string[] = [];
  for (const c of report.cases) {
    lines.push(`#### ${c.id}: \`GET ${c.path}\`, ${c.bodyBytes} B body, ${c.load}`, '');
    lines.push(`| target | req/s | p50 ms | p90 ms | p99 ms | errors | non-2xx | CPU µs/req | RSS MiB | ${subject} ÷ target: req/s | p99 | CPU/req |`);
    lines.push('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
    for (const t of c.targets) {
      const r = c.ratios.find((x) => x.target === t.target);
      const errs = t.errors + t.timeouts;
      lines.push(`| ${t.label} | ${Number.isFinite(t.rps) ? int.format(t.rps) : '–'} | ${fmtMs(t.p50)} | ${fmtMs(t.p90)} | ${fmtMs(t.p99)} | ${errs} | ${t.non2xx} | `
        + `${Number.isFinite(t.cpuMicrosPerRequest) ? int.format(t.cpuMicrosPerRequest) : '–'} | ${t.rssBytes > 0 ? int.format(t.rssBytes / 1048576) : '–'} | `
        + `${r === undefined ? '' : fmtRatio(r.rps)} | ${r === undefined ? '' : fmtRatio(r.p99)} | ${r === undefined ? '' : fmtRatio(r.cpu)} |`);
    }
    lines.push('');
  }
  for (const issue of [...new Set(report.goals.map((g) => g.issue))]) {
    lines.push(`#### Goals of issue ${issue}, as measured in this run`, '');
    lines.push('| case | load | goal | tandem ÷ target | medians | met |', '|---|---|---|--:|---|:-:|');
    for (const g of report.goals.filter((x) => x.issue === issue)) {
      lines.push(`| ${g.case} | ${g.load} | ${g.goal} | ${fmtRatio(g.measured)} | ${g.figures} | ${g.met === null ? 'not run' : g.met ? 'yes' : 'no'} |`);
    }
    lines.push('');
  }
  lines.push(`Medians of ${s.rounds} round${s.rounds === 1 ? '' : 's'} of ${s.durationSeconds} s per target, case and load generator (after ${s.warmupSeconds} s of warm-up each), `
    + `${s.loads.map((l) => (l === 'wrk' ? `wrk -t1 -c ${s.connections}` : `autocannon -c ${s.connections}, pipelining ${s.pipelining}`)).join('; ')}; targets in a rotated order each round. `
    + `Ratios are computed within each round, then the median is taken. Errors count connection errors and timeouts. `
    + `CPU µs/req is the CPU time of the target's processes during a run divided by the requests it served (for the origin: the origin's own); `
    + `it is the figure other load on the machine disturbs least.`, '');
  lines.push(`Machine: ${m.nproc} CPUs (nproc), ${m.cpuModel}, ${int.format(m.memoryBytes / 1048576)} MiB, Linux ${m.kernel}, `
    + `load average at start ${m.loadavg.join(' / ')}.`, '');
  lines.push(`Software: Node ${m.node}, tandem ${m.packages.tandem} (commit ${m.commit}${m.srcModified ? ' with uncommitted changes in src/' : ''}), `
    + Object.entries(m.packages).filter(([k]) => k !== 'tandem').map(([k, v]) => `${k} ${v}`).join(', ') + '.', '');
  lines.push(`Run ${report.startedAt} – ${report.finishedAt}.`, '');
  lines.push('Targets:', '');
  for (const t of s.targets) lines.push(`- **${t.label}** (\`${t.id}\`): ${t.description}`);
  for (const t of s.skipped) lines.push(`- \`${t.id}\`: skipped, ${t.reason}`);
  lines.push('');
  return lines.join('\n');
}
