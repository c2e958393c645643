// tandem's own log (src/log.ts) as an operator reads it from real processes: JSON lines
// on stderr with level, time and msg, and the fields of each event: start, backend state
// changes with the check's result and what is left of the pool, admin changes with who
// made them, reloads by SIGHUP and by the API with what they changed, VIP transitions
// with their epoch, stop; --log-level and a reloaded log.level; workers' own lines.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { until } from '../cluster/support.ts';
import { freePort } from '../ha/support.ts';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { singlePool } from '../helpers/config.ts';
import { parseLogLines, type LogLine } from '../helpers/log.ts';
import { CLI, NODE, startTandem, type TandemProcess } from '../helpers/tandem.ts';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
const CHECKS = { path: '/healthz', interval: '1s', timeout: '900ms', rise: 1, fall: 1 };

const backends: TestBackend[] = [];
const procs: TandemProcess[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(backends.map((b) => b.close()));
});

async function threeBackends(): Promise<[TestBackend, TestBackend, TestBackend]> {
  const bs = await Promise.all(['b1', 'b2', 'b3'].map((name) => startBackend({ name })));
  backends.push(...bs);
  return bs as [TestBackend, TestBackend, TestBackend];
}

/** Admin API changes say JSON (the guard refuses other POSTs). */
const POST = { method: 'POST', headers: { 'content-type': 'application/json' } };

/** Every line is one JSON object with the basics. */
function assertWellFormed(lines: readonly LogLine[], text: string): void {
  const stderrLines = text.split('\n').filter((l) => l.startsWith('{') && l.includes('"msg"'));
  assert.equal(lines.length, stderrLines.length, 'every log line parses as JSON');
  for (const l of lines) {
    assert.match(l.level, /^(trace|debug|info|warn|error|fatal)$/);
    assert.ok(!Number.isNaN(Date.parse(l.time as string)), `time is a date: ${l.time}`);
    assert.equal(typeof l.pid, 'number');
    assert.equal(typeof l.msg, 'string');
  }
}

describe('the operators log', () => {
  test('start, backend DOWN and UP with the check result, admin drain, reloads by SIGHUP and API, workers, stop', async () => {
    const [b1, b2, b3] = await threeBackends();
    const yaml = (extra: Record<string, unknown> = {}) => singlePool(
      [{ name: 'b1', url: b1.url }, { name: 'b2', url: b2.url }, { name: 'b3', url: b3.url, backup: true }],
      { healthCheck: CHECKS },
      { workers: 2, ...extra },
    );
    const t = await startTandem(yaml());
    procs.push(t);

    // Start: version, Node, workers, listeners, admin.
    const start = t.lines().find((l) => l.event === 'start')!;
    assert.equal(start.level, 'info');
    assert.equal(start.version, VERSION);
    assert.equal(start.nodeVersion, process.version);
    assert.equal(start.workers, 2);
    assert.deepEqual(Object.keys(start.listeners as object), ['web']);
    assert.match(start.msg, /^ready: tandem /);
    assert.equal(`http://${start.admin}`, t.admin);

    // Each worker writes its own lines, with `worker`.
    const serving = await until(() => t.lines().filter((l) => l.event === 'serving').length >= 2, 10_000, 'both workers to log').then(() =>
      t.lines().filter((l) => l.event === 'serving'));
    assert.equal(new Set(serving.map((l) => l.worker)).size, 2, 'two workers, each with its own `worker`');
    assert.ok(serving.every((l) => typeof l.worker === 'number' && (l.listeners as Record<string, string>).web !== undefined));
    assert.ok(t.lines().filter((l) => l.event === 'start' || l.event === 'worker-start').every((l) => l.worker === undefined), 'the control plane has none');

    // A wrong status takes b1 down: the check's status and duration, what is left of the pool.
    b1.healthStatus = 500;
    const down = await t.waitForLine((l) => l.event === 'backend' && l.backend === 'b1' && l.state === 'down', { from: 0 });
    assert.equal(down.level, 'warn');
    assert.equal(down.pool, 'web');
    assert.equal(down.previous, 'up');
    assert.match(down.reason as string, /health checks failed: status 500/);
    const check = down.check as { ok: boolean; status: number | null; durationMs: number };
    assert.equal(check.ok, false);
    assert.equal(check.status, 500);
    assert.equal(typeof check.durationMs, 'number');
    assert.deepEqual(down.available, { active: 1, backup: 1 });
    assert.match(down.msg, /^backend web\/b1 is DOWN, reason: .*status 500.*check duration: \d+ ms; 1 active and 1 backup backends left/);

    // A backend that stops answering at all: no status, and only the backup left.
    let from = t.lines().length;
    await b2.stop();
    const refused = await t.waitForLine((l) => l.event === 'backend' && l.backend === 'b2' && l.state === 'down', { from });
    assert.equal((refused.check as { status: number | null }).status, null);
    assert.deepEqual(refused.available, { active: 0, backup: 1 });

    // Back up.
    from = t.lines().length;
    b1.healthStatus = 200;
    await b2.restart();
    const up = await t.waitForLine((l) => l.event === 'backend' && l.backend === 'b1' && l.state === 'up', { from });
    assert.equal(up.level, 'info');
    assert.equal(up.previous, 'down');
    assert.equal((up.check as { ok: boolean; status: number }).status, 200);
    await t.waitForLine((l) => l.event === 'backend' && l.backend === 'b2' && l.state === 'up', { from });

    // An admin drain: who asked, what, the outcome; and the backend's own line says by whom.
    from = t.lines().length;
    const r = await fetch(`${t.admin}/api/v1/pools/web/backends/b3/drain`, POST);
    assert.equal(r.status, 200);
    const drain = await t.waitForLine((l) => l.event === 'admin', { from });
    assert.equal(drain.level, 'info');
    assert.equal(drain.action, 'drain');
    assert.equal(drain.target, 'web/b3');
    assert.equal(drain.client, '127.0.0.1');
    assert.equal(drain.status, 200);
    assert.equal(drain.component, 'admin');
    const drained = await t.waitForLine((l) => l.event === 'backend' && l.backend === 'b3', { from });
    assert.equal(drained.state, 'draining');
    assert.equal(drained.actor, '127.0.0.1');
    // Reads are not logged at info.
    await (await fetch(`${t.admin}/api/v1/status`)).text();

    // Reload by SIGHUP: what changed.
    from = t.lines().length;
    assert.equal(await t.reload(yaml({ shutdownTimeout: '4s' }).replace('pools:', 'pools:\n  extra:\n    backends:\n      - { name: e1, url: "http://127.0.0.1:9" }')), 'reloaded');
    const hup = t.lines().slice(from).find((l) => l.event === 'reload')!;
    assert.equal(hup.level, 'info');
    assert.equal(hup.source, 'SIGHUP');
    assert.equal(hup.result, 'success');
    const changes = hup.changes as { settings: string[]; pools: { added: string[] } };
    assert.deepEqual(changes.pools.added, ['extra']);
    assert.deepEqual(changes.settings, ['shutdownTimeout']);
    assert.match(hup.msg, /^reloaded \(SIGHUP\): pools extra added; settings shutdownTimeout$/);
    assert.equal(t.lines().slice(from).filter((l) => l.event === 'admin').length, 0, 'the GET was not logged at info');

    // Reload by the API: who asked, and what changed (b1's weight).
    writeFileSync(t.file, yaml().replace(/name: b1\n(\s+)url: (\S+)/, 'name: b1\n$1url: $2\n$1weight: 3'));
    from = t.lines().length;
    const api = await fetch(`${t.admin}/api/v1/reload`, POST);
    assert.equal(api.status, 200, await api.text());
    const byApi = await t.waitForLine((l) => l.event === 'reload', { from });
    assert.equal(byApi.source, 'api');
    assert.equal(byApi.client, '127.0.0.1');
    const apiChanges = byApi.changes as { pools: { changed: string[]; removed: string[] }; backends: { changed: string[] }; settings: string[] };
    assert.deepEqual(apiChanges.pools.changed, ['web']);
    assert.deepEqual(apiChanges.pools.removed, ['extra']);
    assert.deepEqual(apiChanges.backends.changed, ['web/b1']);
    assert.deepEqual(apiChanges.settings, ['shutdownTimeout']);
    const apiAdmin = await t.waitForLine((l) => l.event === 'admin' && l.action === 'reload', { from });
    assert.equal(apiAdmin.client, '127.0.0.1');

    // A rejected reload is an error, with the FILE:LINE:COL lines.
    from = t.lines().length;
    const rejected = await t.reload(yaml().replace('interval: 1s', 'interval: 1'));
    assert.match(rejected, /^reload rejected/);
    const bad = t.lines().slice(from).find((l) => l.event === 'reload')!;
    assert.equal(bad.level, 'error');
    assert.equal(bad.result, 'failure');
    assert.match((bad.errors as string[])[0], /tandem\.yaml:\d+:\d+: pools\.web\.healthCheck\.interval/);

    // Stop: the control plane's lines, and each worker's.
    from = t.lines().length;
    assert.equal(await t.stop(), 0);
    const stop = t.lines().slice(from);
    assert.equal(stop.find((l) => l.event === 'stop')?.signal, 'SIGTERM');
    assert.ok(stop.some((l) => l.event === 'stopped'));
    assert.equal(new Set(stop.filter((l) => l.event === 'drained').map((l) => l.worker)).size, 2, 'both workers logged their stop');
    assertWellFormed(t.lines(), t.output());
  });

  test('--log-level warn hides info lines, in the workers too; a reloaded log.level applies', async () => {
    const [b1] = await threeBackends();
    const dir = mkdtempSync(join(tmpdir(), 'tandem-log-'));
    const file = join(dir, 'tandem.yaml');
    const admin = await freePort();
    const yaml = (level: string) => singlePool(
      [{ name: 'b1', url: b1.url }, { name: 'gone', url: 'http://127.0.0.1:9' }],
      { healthCheck: CHECKS },
      { workers: 2, admin: { address: `127.0.0.1:${admin}` }, log: { level } },
    );
    writeFileSync(file, yaml('info'));
    const child = spawn(NODE, [CLI, 'run', '-c', file, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    try {
      // The backend that is not there goes down: a warning, so it shows.
      await until(() => parseLogLines(err).some((l) => l.event === 'backend' && l.backend === 'gone'), 60_000, `the warning; stderr:\n${err}`);
      await until(async () => (await fetch(`http://127.0.0.1:${admin}/readyz`).catch(() => null))?.status === 200, 60_000, 'ready');
      const r = await fetch(`http://127.0.0.1:${admin}/api/v1/pools/web/backends/b1/drain`, POST);
      assert.equal(r.status, 200);
      await fetch(`http://127.0.0.1:${admin}/api/v1/pools/web/backends/b1/enable`, POST);
      child.kill('SIGTERM');
      assert.equal(await exited, 0);
      const lines = parseLogLines(err);
      assertWellFormed(lines, err);
      assert.deepEqual(lines.filter((l) => l.level !== 'warn' && l.level !== 'error'), [], 'nothing below warn, neither start nor stop nor admin nor workers');
      assert.ok(lines.some((l) => l.level === 'warn' && l.event === 'backend'));
    } finally {
      child.kill('SIGKILL');
    }

    // Without the flag, the config's level holds, and a reload changes it.
    const t = await startTandem(yaml('info'));
    procs.push(t);
    await until(() => t.lines().filter((l) => l.event === 'serving').length >= 2, 10_000, 'both workers');
    assert.ok(t.lines().some((l) => l.level === 'info' && l.event === 'start'));
    assert.equal(await t.reload(yaml('warn')), 'reloaded');
    const from = t.lines().length;
    assert.equal((await fetch(`${t.admin}/api/v1/pools/web/backends/b1/drain`, POST)).status, 200);
    assert.equal((await fetch(`${t.admin}/api/v1/pools/web/backends/b1/enable`, POST)).status, 200);
    b1.healthStatus = 500;
    await t.waitForLine((l) => l.event === 'backend' && l.backend === 'b1' && l.state === 'down', { from });
    assert.equal(await t.stop(), 0);
    const after = t.lines().slice(from);
    assert.deepEqual(after.filter((l) => l.level === 'info'), [], 'after the reload to warn: no admin, backend, stop or worker line at info');
  });

  test('a reload to format: pretty turns the next lines, the workers\' too, into readable ones', async () => {
    const [b1] = await threeBackends();
    const yaml = (format: string) => singlePool([{ name: 'b1', url: b1.url }], {}, { log: { format } });
    const t = await startTandem(yaml('json'));
    procs.push(t);
    assert.equal(await t.reload(yaml('pretty')), 'reloaded');
    const from = t.output().length;
    assert.equal(await t.stop(), 0);
    const after = t.output().slice(from).split('\n').filter((l) => l !== '');
    assert.ok(after.length >= 3, after.join('\n'));
    assert.ok(after.every((l) => !l.startsWith('{')), `no JSON after the reload:\n${after.join('\n')}`);
    assert.ok(after.some((l) => /^\[[\d-]+ [\d:.]+\] INFO: SIGTERM: stopping .*\{"event":"stop"/.test(l)), after.join('\n'));
    assert.ok(after.some((l) => /INFO: worker 1: data plane stopped/.test(l)), after.join('\n'));
  });

  test('a level that is none is refused: --log-level exits 1 with the usage, log.level is a config error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tandem-log-'));
    const file = join(dir, 'tandem.yaml');
    writeFileSync(file, singlePool([{ name: 'b1', url: 'http://127.0.0.1:9' }], {}, { log: { level: 'loud' } }));
    const run = (args: string[]) => new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(NODE, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.once('exit', (code) => resolve({ code, stderr }));
    });
    const flag = await run(['run', '-c', file, '--log-level', 'loud']);
    assert.equal(flag.code, 1);
    assert.match(flag.stderr, /--log-level must be one of fatal, error, warn, info, debug, trace, silent[\s\S]*Usage: tandem run/);
    const key = await run(['check', '-c', file]);
    assert.equal(key.code, 1);
    assert.match(key.stderr, /tandem\.yaml:\d+:\d+: log\.level: must be one of fatal, error, warn, info, debug, trace, silent \(got "loud"\)/);
  });

  test('a VIP transition carries its epoch', async () => {
    const [b1] = await threeBackends();
    const t = await startTandem(singlePool([{ name: 'b1', url: b1.url }], {}, {
      ha: {
        nodes: { lb1: { address: `127.0.0.1:${await freePort()}` } },
        // Long enough that a busy machine does not make the only node lose it before the stop.
        lease: { duration: '3s', renewEvery: '300ms' },
        vips: [{ name: 'vip-a', address: '10.213.9.100/32', interface: 'lo', priority: { lb1: 100 } }],
      },
    }), { args: ['--node', 'lb1'] });
    procs.push(t);
    const master = await t.waitForLine((l) => l.event === 'vip' && l.state === 'MASTER', { from: 0 });
    assert.equal(master.level, 'info');
    assert.equal(master.vip, 'vip-a');
    assert.equal(master.holder, 'lb1');
    assert.equal(master.node, 'lb1');
    assert.ok((master.epoch as number) >= 1, `epoch ${master.epoch}`);
    assert.match(master.msg, /^VIP vip-a 10\.213\.9\.100\/32 is MASTER on lb1 \(held here, epoch \d+\)/);
    const hook = await t.waitForLine((l) => l.event === 'hook' && l.state === 'MASTER', { from: 0 });
    assert.equal(hook.epoch, master.epoch);
    const from = t.lines().length;
    assert.equal(await t.stop(), 0);
    const stopped = t.lines().slice(from).find((l) => l.event === 'vip' && l.state === 'STOP');
    assert.ok(stopped !== undefined, 'the STOP transition is logged');
    assert.equal(stopped.previous, 'MASTER');
  });
});
