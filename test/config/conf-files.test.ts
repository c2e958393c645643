import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfigFile } from '../../src/config/load.ts';
import { TestCa } from '../helpers/certs.ts';

const confDir = join(import.meta.dirname, '../../conf');

// The variables the example files document at their top; a user sets these. The HTTPS
// example reads its certificates from TANDEM_CERTS: real ones, made for the test.
const ca = new TestCa('internal CA');
for (const [name, names] of [['example.com', ['example.com', 'www.example.com']], ['apps.example.com', ['*.apps.example.com']]] as const) {
  const leaf = ca.issue(name, names);
  copyFileSync(leaf.cert, join(ca.dir, `${name}.crt`));
  copyFileSync(leaf.key, join(ca.dir, `${name}.key`));
}
copyFileSync(ca.cert, join(ca.dir, 'internal-ca.pem'));
const env = { TANDEM_HA_SECRET: 'an-example-secret-for-tests', TANDEM_CERTS: ca.dir };

/** Every .yaml file under conf/, subfolders included. */
async function exampleFiles(): Promise<string[]> {
  const entries = await readdir(confDir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && /\.ya?ml$/.test(e.name))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

test('conf/ holds the single, active-passive, active-active and https examples', async () => {
  const names = (await exampleFiles()).map((f) => f.slice(confDir.length + 1));
  for (const expected of ['single.yaml', 'active-passive.yaml', 'active-active.yaml', 'https.yaml']) assert.ok(names.includes(expected), `conf/${expected} is missing`);
});

test('every file under conf/ loads without errors, as every node it names', async () => {
  for (const file of await exampleFiles()) {
    const plain = await loadConfigFile(file, { env });
    if (!plain.ok) assert.fail(`${file} does not load:\n${plain.errors.join('\n')}`);
    for (const node of plain.config.ha?.nodes ?? []) {
      const asNode = await loadConfigFile(file, { env, node: node.id });
      if (!asNode.ok) assert.fail(`${file} does not load as --node ${node.id}:\n${asNode.errors.join('\n')}`);
    }
  }
});

test('the HA examples are real pairs: two nodes, and each VIP preferred by one of them', async () => {
  for (const name of ['active-passive.yaml', 'active-active.yaml']) {
    const result = await loadConfigFile(join(confDir, name), { env });
    assert.ok(result.ok);
    const ha = result.config.ha;
    assert.ok(ha !== null, `${name} has no ha section`);
    assert.equal(ha.nodes.length, 2);
    for (const vip of ha.vips) assert.notEqual(vip.priority.lb1, vip.priority.lb2, `${name}: ${vip.name} has no preferred node`);
  }
  const aa = await loadConfigFile(join(confDir, 'active-active.yaml'), { env });
  assert.ok(aa.ok);
  const preferred = aa.config.ha?.vips.map((v) => (v.priority.lb1 > v.priority.lb2 ? 'lb1' : 'lb2'));
  assert.deepEqual(preferred, ['lb1', 'lb2']);
});

test('the active-passive example refuses to start without its shared secret', async () => {
  const result = await loadConfigFile(join(confDir, 'active-passive.yaml'), { env: {} });
  assert.equal(result.ok, false);
  assert.match(result.ok ? '' : result.errors.join('\n'), /ha\.secret: environment variable TANDEM_HA_SECRET is not set/);
});

test('the HTTPS example serves two certificates over HTTP/2 and redirects plain HTTP', async () => {
  const result = await loadConfigFile(join(confDir, 'https.yaml'), { env });
  if (!result.ok) assert.fail(result.errors.join('\n'));
  const https = result.config.listeners.find((l) => l.name === 'https')!;
  assert.equal(https.http2, true);
  assert.equal(https.tls?.certificates.length, 2);
  assert.deepEqual(result.config.routes[0].redirect, { scheme: 'https', host: null, port: null, path: null, code: 301 });
  assert.equal(result.config.pools.get('api')?.tls?.servername, 'api.internal');
});
