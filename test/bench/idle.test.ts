// The idle-connections benchmark (bench/idle-connections.ts) run small, as its command
// line runs it: real tandem, real backend, real client connections. It checks that the
// run measured what it says (connections open in the worker, every figure present),
// never how much memory anything took. Then the medians and goal checks of its report.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { idleGoals, summarizeIdle, type IdleReport, type IdleRun } from '../../bench/idle-report.ts';

const SCRIPT = join(import.meta.dirname, '../../bench/idle-connections.ts');

function runBench(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // tandem from src/ whatever the environment says.
  const env = { ...process.env };
  delete env.TANDEM_CLI;
  const child = spawn(process.execPath, [SCRIPT, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => { stdout += c; });
  child.stderr.on('data', (c: Buffer) => { stderr += c; });
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

test('a small run of each engine holds every connection open in its worker and reports each figure', { timeout: 120_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'tandem-bench-idle-'));
  try {
    const r = await runBench(['--engine', 'both', '--connections', '200', '--batch', '50', '--pause', '0.05', '--rounds', '1', '--settle', '0.5', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const files = readdirSync(out).sort();
    assert.equal(files.length, 2);
    assert.match(files[0], /^idle-.+\.json$/);
    assert.match(files[1], /^idle-.+\.md$/);
    const report = JSON.parse(readFileSync(join(out, files[0]), 'utf8')) as IdleReport;

    assert.equal(report.schema, 'tandem-bench-idle/1');
    assert.deepEqual(report.settings.engines, ['fast', 'node']);
    assert.equal(report.settings.connections, 200);
    assert.equal(report.settings.pauseSeconds, 0.05);
    assert.equal(report.settings.entry, 'src/cli.ts');
    assert.ok(report.settings.openFilesLimit >= 200);
    assert.deepEqual(report.runs.map((x) => [x.round, x.engine]), [[1, 'fast'], [1, 'node']]);
    for (const run of report.runs) {
      // The worker held a descriptor per connection, and counted them as its listener's.
      assert.ok(run.worker.after.fds - run.worker.before.fds >= 200, `${run.engine}: worker fds ${run.worker.before.fds} -> ${run.worker.after.fds}`);
      assert.equal(run.proxyCounted, 200, run.engine);
      for (const p of [run.worker.before, run.worker.after, run.controlPlane.before, run.controlPlane.after]) {
        for (const k of ['rss', 'anon', 'file'] as const) assert.ok(p.memory[k] > 0, `${run.engine} ${k}`);
      }
      assert.ok(run.worker.heapBefore !== null && run.worker.heapAfter !== null, `${run.engine}: heap after forced GC read`);
      for (const k of ['rss', 'anon', 'heap', 'outsideHeap'] as const) assert.equal(typeof run.perConnectionKb[k], 'number', `${run.engine} ${k}`);
      assert.ok(run.openSeconds > 0);
    }

    assert.deepEqual(report.engines.map((e) => [e.engine, e.rounds]), [['fast', 1], ['node', 1]]);
    assert.equal(report.engines[1].rssKb, report.runs[1].perConnectionKb.rss);
    // 200 connections do not check the 10,000-connection goal; the engines are compared whatever the size.
    assert.deepEqual(report.goals.slice(0, 2).map((g) => [g.met, g.undecided]), [[null, 'not run'], [null, 'not run']]);
    assert.match(report.goals[2].measured, /^-?[\d.]+ KB \(.+\) vs -?[\d.]+ KB \(.+\), /);

    assert.match(r.stdout, /\| engine \| worker RSS: before → 200 idle \| KB\/conn \(min–max\) \|/);
    for (const engine of ['fast', 'node']) {
      assert.match(r.stdout, new RegExp(`\\| ${engine} \\| [\\d.]+ → [\\d.]+ \\| -?[\\d.]+ \\(`));
      assert.match(r.stdout, new RegExp(`\\| 1 \\| ${engine} \\| [\\d.]+ → [\\d.]+ \\| -?[\\d.]+ \\|`));
    }
    assert.match(r.stdout, /written to .+idle-.+\.json/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('an unknown engine is refused with exit code 1 before anything starts', async () => {
  const out = join(tmpdir(), `tandem-bench-idle-none-${process.pid}`);
  const r = await runBench(['--engine', 'turbo', '--out', out]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--engine must be fast, node or both \(got turbo\)/);
  assert.throws(() => readdirSync(out), { code: 'ENOENT' });
});

/** A run with the given per-connection RSS and worker RSS after. */
function run(round: number, engine: 'fast' | 'node', rssKb: number, afterMb: number, connections = 10_000): IdleRun {
  const reading = (rss: number) => ({ memory: { rss, pss: rss, private: rss, shared: 0, anon: rss / 2, file: rss / 2 }, fds: 40 });
  return {
    round, engine, connections, openSeconds: 1,
    worker: { before: reading(90), after: reading(afterMb), heapBefore: null, heapAfter: null },
    controlPlane: { before: reading(80), after: reading(80) },
    perConnectionKb: { rss: rssKb, anon: rssKb, heap: null, outsideHeap: null },
    proxyCounted: connections,
  };
}

test('the report takes medians over rounds per engine and checks the goals against them', () => {
  const runs = [
    run(1, 'fast', 5, 95), run(1, 'node', 12, 210),
    run(2, 'node', 13, 220), run(2, 'fast', 40, 400), // one bad round for fast; the median drops it
    run(3, 'fast', 6, 98), run(3, 'node', 11, 200),
  ];
  const engines = summarizeIdle(['fast', 'node'], runs);
  assert.deepEqual(engines.map((e) => [e.engine, e.rounds, e.rssKb, e.rssKbRange, e.workerRssAfter, e.heapKb]), [
    ['fast', 3, 6, [5, 40], 98, null],
    ['node', 3, 12, [11, 13], 210, null],
  ]);
  const goals = idleGoals(10_000, engines);
  assert.deepEqual(goals.map((g) => g.met), [true, false, true]);
  assert.equal(goals[2].measured, '6.00 KB (5.00–40.00) vs 12.00 KB (11.00–13.00), 0.50×');

  // A higher median is "more" only where no round of fast is within node's rounds.
  const compare = (fast: number[], node: number[]) => {
    const rounds = fast.flatMap((f, i) => [run(i + 1, 'fast', f, 200), run(i + 1, 'node', node[i], 200)]);
    const g = idleGoals(10_000, summarizeIdle(['fast', 'node'], rounds))[2];
    return [g.met, g.undecided];
  };
  assert.deepEqual(compare([14.7, 12.5, 14.5], [13.6, 12.9, 12.5]), [null, 'within noise']);
  assert.deepEqual(compare([15, 16, 17], [12, 13, 14]), [false, undefined]);
  assert.deepEqual(compare([12, 13, 14], [12, 13, 14]), [true, undefined]);

  // Below 10,000 connections the absolute goal is not checked; one engine alone is not compared.
  assert.deepEqual(idleGoals(200, summarizeIdle(['node'], [run(1, 'node', 12, 92, 200)])).map((g) => [g.met, g.undecided]), [[null, 'not run'], [null, 'not run']]);
});
