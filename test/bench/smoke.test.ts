// The benchmark harness end to end, at toy size: real origin, real tandem process, real
// autocannon child. It checks what the run writes, never how fast anything was.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bench, runBenchmark } from '../../bench/run.ts';
import type { Report } from '../../bench/report.ts';

test('a one-round run of the origin and tandem writes a JSON report and a Markdown table with every expected field', { timeout: 30_000 }, async () => {
  const out = mkdtempSync(join(tmpdir(), 'tandem-bench-smoke-'));
  const lines: string[] = [];
  try {
    const { jsonFile, markdownFile } = await runBenchmark({
      rounds: 1, duration: 1, warmup: 0, targets: ['direct', 'tandem'], out, log: (l) => lines.push(l),
    });
    assert.deepEqual(readdirSync(out).sort(), [jsonFile, markdownFile].map((f) => f.slice(out.length + 1)).sort());
    const report = JSON.parse(readFileSync(jsonFile, 'utf8')) as Report;

    assert.equal(report.schema, 'tandem-bench/2');
    assert.deepEqual(report.settings.loads, ['autocannon']);
    assert.equal(report.settings.rounds, 1);
    assert.equal(report.settings.connections, 50);
    assert.deepEqual(report.settings.targets.map((t) => t.id), ['direct', 'tandem']);
    assert.deepEqual(report.settings.cases.map((c) => [c.id, c.bodyBytes]), [['small', 100], ['16k', 16384]]);
    assert.ok(report.machine.nproc >= 1);
    assert.match(report.machine.node, /^v\d+\./);
    assert.ok(report.machine.cpuModel.length > 0);
    assert.match(report.machine.packages.autocannon, /^\d+\.\d+\.\d+/);
    assert.ok(Date.parse(report.finishedAt) >= Date.parse(report.startedAt));

    // One run per target and case, each with every measured field, and without failures.
    assert.equal(report.runs.length, 4);
    for (const r of report.runs) {
      assert.equal(r.round, 1);
      assert.equal(r.load, 'autocannon');
      assert.ok(r.requests > 0, `${r.target} ${r.case} served no request`);
      for (const k of ['rps', 'bytesPerSecond', 'durationSeconds', 'rssBytes'] as const) assert.equal(typeof r[k], 'number', k);
      for (const k of ['p50', 'p90', 'p99', 'mean', 'max'] as const) assert.equal(typeof r.latency[k], 'number', k);
      // null (NaN in memory) only where /proc cannot be read.
      assert.ok(r.cpuMicrosPerRequest === null || r.cpuMicrosPerRequest > 0, 'cpuMicrosPerRequest');
      assert.equal(r.errors + r.timeouts + r.non2xx, 0, `${r.target} ${r.case} had failed requests`);
    }

    // Per case: a summary per target, and tandem's ratio to the other target.
    assert.deepEqual(report.cases.map((c) => c.id), ['small', '16k']);
    for (const c of report.cases) {
      assert.deepEqual(c.targets.map((t) => t.target), ['direct', 'tandem']);
      assert.equal(c.ratios.length, 1);
      assert.equal(c.ratios[0].target, 'direct');
      assert.equal(c.ratios[0].rpsByRound.length, 1);
      assert.ok(c.ratios[0].rps > 0);
      assert.equal(typeof c.ratios[0].p99, 'number');
    }
    // Goals whose baselines did not run say so rather than pass or fail.
    assert.ok(report.goals.length > 0 && report.goals.every((g) => g.met === null));

    const table = readFileSync(markdownFile, 'utf8');
    assert.match(table, /\| target \| req\/s \| p50 ms \| p90 ms \| p99 ms \| errors \| non-2xx \| CPU µs\/req \|/);
    assert.match(table, /\| tandem \| [\d,]+ \|/);
    assert.match(table, /Node v\d+/);
    // A progress line per measured run.
    assert.equal(lines.filter((l) => /^\[\d\/4\] round 1 /.test(l)).length, 4);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('bench refuses a target it does not know with exit code 1 and writes nothing', async () => {
  const out = join(tmpdir(), `tandem-bench-none-${process.pid}`);
  const code = await bench({ targets: ['nginx-plus'], out, log: () => {} });
  assert.equal(code, 1);
  assert.equal(existsSync(out), false);
});
