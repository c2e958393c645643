// The installable package: `npm pack` compiles src/ to dist/ (prepack), and the tarball,
// installed with `npm install <tarball>` into an empty directory, runs under node_modules,
// where Node does not strip types: `tandem --version`, `tandem check`, `tandem run`.

import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { singlePool } from '../helpers/config.ts';
import { startTandem } from '../helpers/tandem.ts';
import { installTarball, must, packTandem, PATH, ROOT, sh } from './pack.ts';

let dir = '';
let tgz = '';
let pkg = '';
let bin = '';
const version = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-pkg-'));
  tgz = await packTandem(dir);
  const prefix = join(dir, 'app');
  await installTarball(tgz, prefix);
  pkg = join(prefix, 'node_modules/tandem');
  bin = join(prefix, 'node_modules/.bin/tandem');
});

after(async () => {
  if (dir !== '') await rm(dir, { recursive: true, force: true });
});

test('the tarball ships the compiled JavaScript, not the TypeScript sources or the tests', async () => {
  const listing = (await must('tar', ['-tzf', tgz])).split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
  for (const f of ['bin/tandem.js', 'dist/cli.js', 'dist/dataplane/worker-entry.js', 'dist/admin/status-page/index.html', 'scripts/vip-hook.sh', 'LICENSE', 'README.md', 'conf/single.yaml']) {
    assert.ok(listing.includes(f), `${f} is not in the package:\n${listing.join('\n')}`);
  }
  const unwanted = listing.filter((f) => f.endsWith('.ts') || /^(src|test|bench)\//.test(f));
  assert.deepEqual(unwanted, [], 'the package ships TypeScript, tests or benchmarks');
});

test('installed: `tandem --version` prints package.json\'s version', async () => {
  const r = await sh(bin, ['--version'], { cwd: dir });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, `tandem ${version} (node ${process.versions.node})\n`);
});

test('installed: `tandem check` accepts the shipped example and names a mistake in a broken file', async () => {
  const ok = await sh(bin, ['check', '-c', join(pkg, 'conf/single.yaml')], { cwd: dir });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /single\.yaml: ok/);
  const broken = join(dir, 'broken.yaml');
  await writeFile(broken, 'listeners:\n  - { name: web, address: 0.0.0.0:80 }\nroutes: []\npools: {}\nadmni: {}\n');
  const bad = await sh(bin, ['check', '-c', broken], { cwd: dir });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /broken\.yaml:5:1: admni/);
});

test('installed: `tandem bench` says it needs the source tree instead of failing', async () => {
  const r = await sh(bin, ['bench'], { cwd: dir });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /tandem bench: the benchmark needs the development tree; in a checkout run: npm run bench/);
});

test('installed: `tandem run` with two workers proxies a request and answers on the admin API', async () => {
  let backend: TestBackend | null = null;
  backend = await startBackend({ name: 'app1' });
  const t = await startTandem(singlePool([{ name: 'app1', url: `http://127.0.0.1:${backend.port}` }], {}, { workers: 2 }), {
    command: [bin],
    env: { PATH },
  });
  try {
    // Workers are forked from the compiled worker entry: a .ts path here would not start.
    assert.equal(t.workerPids().length, 2, t.output());
    const res = await fetch(`${t.url}/hello`);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), 'app1');
    const status = await fetch(`${t.admin}/status`);
    assert.equal(status.status, 200, 'the status page assets are in the package');
    assert.doesNotMatch(t.output(), /ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING/);
  } finally {
    await t.stop();
    await backend.close();
  }
});
