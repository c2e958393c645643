import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, renameSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { readLog } from '../helpers/access-log.ts';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { missingCommand, skipUnless } from '../deploy/needs.ts';

// Rotating the access log as logrotate does: rename the file, then SIGUSR1 to the main
// process (or a reload); every data plane opens the path again. Checked with two
// workers, with the data plane in the main process, and with logrotate itself running
// the stanza docs/configuration.md documents and deploy/logrotate/tandem ships.

const ROOT = join(import.meta.dirname, '../..');
// Awaited before any test or hook is declared: node:test runs the file's `after` hooks
// once the tests declared so far have finished, and a test declared after a top-level
// await would start after them, its tandem never stopped.
const noLogrotate = skipUnless(await missingCommand({ cmd: 'logrotate', pkg: 'logrotate' }), 'logrotate');
const backends: TestBackend[] = [];
const procs: TandemProcess[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(backends.map((b) => b.close()));
});

async function start(workers: number): Promise<{ t: TandemProcess; file: string; yaml: string }> {
  const b = await startBackend({ name: 'b' });
  backends.push(b);
  const file = join(mkdtempSync(join(tmpdir(), 'tandem-rotate-')), 'access.log');
  // `workers: 0` is a command-line choice only (the data plane in the main process).
  const yaml = singlePool([{ name: 'b', url: b.url }], {}, { accessLog: { path: file }, workers: Math.max(1, workers) });
  const t = await startTandem(yaml, { args: ['--workers', String(workers)] });
  procs.push(t);
  return { t, file, yaml };
}

/** GET on a connection of its own, so that the kernel spreads requests over the workers. */
function hit(t: TandemProcess, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(`${t.url}${path}`, { agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
}

async function hits(t: TandemProcess, prefix: string, n: number): Promise<void> {
  const statuses = await Promise.all(Array.from({ length: n }, (_, i) => hit(t, `/${prefix}/${i}`)));
  assert.deepEqual(new Set(statuses), new Set([200]));
}

/** Paths of the files a process has open. */
function openFiles(pid: number): string[] {
  const dir = `/proc/${pid}/fd`;
  const out: string[] = [];
  for (const fd of readdirSync(dir)) {
    try {
      out.push(readlinkSync(join(dir, fd)));
    } catch {
      // Closed meanwhile.
    }
  }
  return out;
}

/** Waits until the log has `n` lines (they are written just after the answers). */
async function lines(file: string, n: number): Promise<ReturnType<typeof readLog>> {
  const deadline = Date.now() + 10_000;
  while (readLog(file).length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return readLog(file);
}

const paths = (file: string) => readLog(file).map((l) => l.path ?? '');

describe('two workers', () => {
  test('rename + SIGUSR1: every worker opens a new file, and no line is lost, even under load', async () => {
    const { t, file } = await start(2);
    const workers = t.workerPids();
    assert.equal(workers.length, 2);
    await hits(t, 'before', 40);
    assert.equal((await lines(file, 40)).length, 40);
    for (const pid of workers) assert.ok(openFiles(pid).includes(file), `worker ${pid} writes ${file}`);

    // Requests keep coming while the file is renamed and the signal handled.
    let sent = 0;
    let stop = false;
    let phase = 'during';
    const load = Promise.all(Array.from({ length: 4 }, async () => {
      while (!stop) {
        const p = phase;
        assert.equal(await hit(t, `/${p}/${sent++}`), 200);
      }
    }));
    await new Promise((r) => setTimeout(r, 200));
    renameSync(file, `${file}.1`);
    const from = t.output().length;
    t.child.kill('SIGUSR1');
    await t.waitForLog(/SIGUSR1: access log \S+ reopened/, { from });
    // Requests that start now are logged in the new file.
    phase = 'after';
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await load;
    await hits(t, 'after', 40);
    for (const pid of workers) {
      const open = openFiles(pid);
      assert.ok(open.includes(file) && !open.includes(`${file}.1`), `worker ${pid} has the new file open, not the old one: ${open.join(' ')}`);
    }
    await t.stop();

    const old = paths(`${file}.1`);
    const now = paths(file);
    assert.equal(old.length + now.length, 40 + sent + 40, 'one line for every request, in one file or the other');
    assert.equal(old.filter((p) => p.startsWith('/before/')).length, 40, 'lines from before the rename stay in the old file');
    assert.ok(now.filter((p) => p.startsWith('/after/')).length >= 40);
    assert.deepEqual(old.filter((p) => p.startsWith('/after/')), [], 'nothing after the reopen goes to the old file');
    assert.match(t.output(), /SIGUSR1: access log/);
    assert.doesNotMatch(t.output(), /Debugger listening/);
  });

  test('a reload reopens the file too, also a rejected one', async () => {
    const { t, file, yaml } = await start(2);
    await hits(t, 'first', 10);
    await lines(file, 10);
    renameSync(file, `${file}.1`);
    assert.equal(await t.reload(yaml), 'reloaded');
    await hits(t, 'reloaded', 20);
    assert.equal((await lines(file, 20)).length, 20);
    assert.deepEqual(paths(`${file}.1`).map((p) => p.split('/')[1]), Array(10).fill('first'));

    renameSync(file, `${file}.2`);
    const from = t.output().length;
    assert.match(await t.reload('pools: [broken'), /^reload rejected/);
    // The rejection is logged before the data planes have opened the file again.
    await t.waitForLog(/rejected reload: access log \S+ reopened/, { from });
    await hits(t, 'rejected', 20);
    assert.equal((await lines(file, 20)).length, 20);
    assert.ok(paths(file).every((p) => p.startsWith('/rejected/')));
    assert.equal(paths(`${file}.2`).length, 20);
    assert.match(t.output(), /rejected reload: access log \S+ reopened/);
  });

  test('a worker that gets SIGUSR1 itself reopens its file and opens no inspector', async () => {
    const { t, file } = await start(2);
    await hits(t, 'x', 4);
    await lines(file, 4);
    renameSync(file, `${file}.1`);
    const [pid] = t.workerPids();
    process.kill(pid, 'SIGUSR1');
    const deadline = Date.now() + 10_000;
    while (!openFiles(pid).includes(file) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(openFiles(pid).includes(file), 'the worker opened the path again');
    assert.ok(existsSync(file));
    assert.ok(t.workerPids().includes(pid), 'the worker lives on');
    await hits(t, 'y', 4);
    assert.doesNotMatch(t.output(), /Debugger listening/);
  });
});

test('the data plane in the main process (--workers 0) reopens on SIGUSR1', async () => {
  const { t, file } = await start(0);
  await hits(t, 'before', 5);
  await lines(file, 5);
  renameSync(file, `${file}.1`);
  const from = t.output().length;
  t.child.kill('SIGUSR1');
  await t.waitForLog(/SIGUSR1: access log \S+ reopened/, { from });
  await hits(t, 'after', 5);
  assert.deepEqual((await lines(file, 5)).map((l) => l.path!.split('/')[1]), Array(5).fill('after'));
  assert.equal(paths(`${file}.1`).length, 5);
  assert.doesNotMatch(t.output(), /Debugger listening/);
});

test('SIGUSR1 without an access log file says so', async () => {
  const b = await startBackend({ name: 'b' });
  backends.push(b);
  const t = await startTandem(singlePool([{ name: 'b', url: b.url }]));
  procs.push(t);
  const from = t.output().length;
  t.child.kill('SIGUSR1');
  await t.waitForLog(/SIGUSR1: no access log file to reopen/, { from });
  assert.equal((await new Promise<number>((resolve) => get(`${t.url}/`, (r) => { r.resume(); resolve(r.statusCode ?? 0); }))), 200);
});

test('docs/configuration.md shows the stanza deploy/logrotate/tandem ships', () => {
  const shipped = readFileSync(join(ROOT, 'deploy/logrotate/tandem'), 'utf8').replace(/^#.*\n/gm, '');
  const docs = readFileSync(join(ROOT, 'docs/configuration.md'), 'utf8');
  const block = /### Rotating the access log[^]*?\n```\n([^]*?)```/.exec(docs)![1];
  assert.equal(block, shipped);
  assert.match(shipped, /^\s+postrotate\n[^]*kill -USR1 "\$pid"/m);
});

test('logrotate runs deploy/logrotate/tandem: the file is rotated and tandem writes a new one', { skip: noLogrotate }, async () => {
  const { t, file } = await start(2);
  await hits(t, 'before', 10);
  await lines(file, 10);
  const dir = mkdtempSync(join(tmpdir(), 'tandem-logrotate-'));
  // The shipped stanza, for this test's file; `systemctl show` answers with the pid of this tandem.
  const stanza = readFileSync(join(ROOT, 'deploy/logrotate/tandem'), 'utf8').replace(/^\/var\/log\/tandem\/access\.log \{$/m, `${file} {`);
  assert.notEqual(stanza, readFileSync(join(ROOT, 'deploy/logrotate/tandem'), 'utf8'));
  writeFileSync(join(dir, 'tandem.conf'), stanza, { mode: 0o644 });
  mkdirSync(join(dir, 'bin'));
  writeFileSync(join(dir, 'bin/systemctl'), `#!/bin/sh\n[ "$*" = "show --property=MainPID --value tandem.service" ] && echo ${t.child.pid}\n`);
  chmodSync(join(dir, 'bin/systemctl'), 0o755);
  const from = t.output().length;
  const r = await new Promise<{ err: Error | null; out: string }>((resolve) => execFile('logrotate',
    ['--force', '--state', join(dir, 'state'), join(dir, 'tandem.conf')],
    { env: { ...process.env, PATH: `${join(dir, 'bin')}:${process.env.PATH}` }, timeout: 20_000 },
    (err, stdout, stderr) => resolve({ err, out: stdout + stderr })));
  assert.equal(r.err, null, r.out);
  await t.waitForLog(/SIGUSR1: access log \S+ reopened/, { from });
  assert.equal(paths(`${file}.1`).length, 10, 'rotated, not compressed yet (delaycompress)');
  await hits(t, 'after', 10);
  assert.deepEqual((await lines(file, 10)).map((l) => l.path!.split('/')[1]), Array(10).fill('after'));
});
