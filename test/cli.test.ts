// The CLI as users run it: bin/tandem.js in a process of its own, its output and its
// exit codes (0 ok, 1 invalid input, 2 runtime failure).

import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadConfigFile } from '../src/config/load.ts';
import { runCli } from './helpers/cli.ts';
import { singlePool } from './helpers/config.ts';

const fixtures = join(import.meta.dirname, 'fixtures/config');
const conf = join(import.meta.dirname, '../conf');

/** Runs `tandem ARGS` with Node's own executable, an environment without TANDEM_ variables. */
const tandem = (args: string[], env: Record<string, string> = {}) => runCli(args, env);

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-cli-'));
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('tandem check on a file with many mistakes exits 1 and prints every one as FILE:LINE:COL: key.path: message', async () => {
  const file = join(fixtures, 'many-mistakes.yaml');
  const expected = await loadConfigFile(file, { env: {} });
  assert.equal(expected.ok, false);
  const r = await tandem(['check', '-c', file]);
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trimEnd().split('\n');
  assert.deepEqual(lines, expected.ok ? [] : expected.errors, 'the CLI prints exactly what the loader found');
  assert.ok(lines.length >= 6, `all mistakes at once, not only the first: ${lines.length}`);
  for (const line of lines) assert.match(line, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: \\S+: .+`), line);
  assert.ok(lines.some((l) => l.includes(':6:') && l.includes('routes[0].pool')), 'the unknown pool is named at its line');
  assert.equal(r.stdout, '');
});

test('tandem check on each broken fixture exits 1 with located errors, and on each conf/ example exits 0', async () => {
  for (const name of ['syntax-error.yaml', 'unknown-key.yaml', 'wrong-types.yaml', 'bad-url.yaml', 'missing-reference.yaml']) {
    const r = await tandem(['check', '-c', join(fixtures, name)]);
    assert.equal(r.code, 1, `${name}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^${join(fixtures, name).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: `, 'm'), name);
  }
  for (const name of ['single.yaml', 'active-passive.yaml', 'active-active.yaml']) {
    const asNode = name === 'single.yaml' ? [] : ['--node', 'lb1'];
    const r = await tandem(['check', '-c', join(conf, name), ...asNode], { TANDEM_HA_SECRET: 'an-example-secret-for-tests' });
    assert.equal(r.code, 0, `${name}: ${r.stderr}`);
    assert.match(r.stdout, /: ok\n$/);
  }
});

test('a --node that is not in ha.nodes, an unknown command, an unknown option or a missing -c exit 1 with the usage', async () => {
  const pair = join(conf, 'active-passive.yaml');
  const wrongNode = await tandem(['check', '-c', pair, '--node', 'lb9'], { TANDEM_HA_SECRET: 'an-example-secret-for-tests' });
  assert.equal(wrongNode.code, 1);
  assert.match(wrongNode.stderr, /lb9/);
  assert.match(wrongNode.stderr, /lb1/, 'the error lists the ids that exist');
  const unknown = await tandem(['serve']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /unknown command 'serve'[\s\S]*Usage: tandem <command>/);
  const badOption = await tandem(['check', '--colour']);
  assert.equal(badOption.code, 1);
  assert.match(badOption.stderr, /Usage: tandem check/);
  const noFile = await tandem(['run']);
  assert.equal(noFile.code, 1);
  assert.match(noFile.stderr, /missing -c FILE/);
  const noWorkers = await tandem(['run', '-c', pair, '--workers', 'two']);
  assert.equal(noWorkers.code, 1);
  assert.match(noWorkers.stderr, /--workers/);
});

test('--help of every command exits 0 with that command\'s usage on stdout', async () => {
  const top = await tandem(['--help']);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /^Usage: tandem <command>/);
  for (const command of ['run', 'check', 'demo', 'vip-agent', 'bench']) {
    const r = await tandem([command, '--help']);
    assert.equal(r.code, 0, `${command}: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^Usage: tandem ${command}`), command);
  }
});

test('tandem run exits 2 when its listener address is taken by another process', async () => {
  const squatter = net.createServer();
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve));
  try {
    const port = (squatter.address() as net.AddressInfo).port;
    const file = join(dir, 'taken.yaml');
    await writeFile(file, singlePool([{ name: 'a', url: 'http://127.0.0.1:9' }], {}, { listeners: [{ name: 'web', address: `127.0.0.1:${port}` }] }));
    const r = await tandem(['run', '-c', file]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${port}`), 'the error names the address');
  } finally {
    squatter.close();
  }
});
