import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { loadConfigFile } from '../../src/config/load.ts';
import { TestCa } from '../helpers/certs.ts';

const confDir = join(import.meta.dirname, '../../conf');
const deployDir = join(import.meta.dirname, '../../deploy');

// The variables the example files document at their top; a user sets these. The HTTPS
// example reads its certificates from TANDEM_CERTS: real ones, made for the test.
const ca = new TestCa('internal CA');
for (const [name, names] of [['example.com', ['example.com', 'www.example.com']], ['apps.example.com', ['*.apps.example.com']]] as const) {
  const leaf = ca.issue(name, names);
  copyFileSync(leaf.cert, join(ca.dir, `${name}.crt`));
  copyFileSync(leaf.key, join(ca.dir, `${name}.key`));
}
copyFileSync(ca.cert, join(ca.dir, 'internal-ca.pem'));
const env = { TANDEM_HA_SECRET: 'an-example-secret-for-tests', TANDEM_ADMIN_TOKEN: 'an-example-admin-token', TANDEM_CERTS: ca.dir };

/** Every .yaml file under `dir` (default conf/), subfolders included. */
async function exampleFiles(dir = confDir): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && /\.ya?ml$/.test(e.name))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

/**
 * The tandem configs under deploy/: files whose top level has `listeners`, and the
 * `tandem.yaml` of Kubernetes ConfigMaps, written to `tmp` with the manifest's name.
 */
async function deployConfigs(tmp: string): Promise<string[]> {
  const found: string[] = [];
  for (const file of await exampleFiles(deployDir)) {
    const docs = parseAllDocuments(await readFile(file, 'utf8')).map((d) => d.toJS() as Record<string, unknown> | null);
    if (docs.some((d) => d !== null && 'listeners' in d)) found.push(file);
    for (const d of docs) {
      const data = d?.kind === 'ConfigMap' ? (d.data as Record<string, string>)['tandem.yaml'] : undefined;
      if (data === undefined) continue;
      const copy = join(tmp, `${file.slice(deployDir.length + 1).replaceAll('/', '_')}.tandem.yaml`);
      await writeFile(copy, data);
      found.push(copy);
    }
  }
  return found;
}

test('conf/ holds the single, active-passive, active-active and https examples', async () => {
  const names = (await exampleFiles()).map((f) => f.slice(confDir.length + 1));
  for (const expected of ['single.yaml', 'active-passive.yaml', 'active-active.yaml', 'https.yaml']) assert.ok(names.includes(expected), `conf/${expected} is missing`);
});

test('every file under conf/, and every tandem config under deploy/, loads without errors, as every node it names', async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'tandem-deploy-conf-'));
  const deploy = await deployConfigs(tmp);
  const names = deploy.map((f) => f.replace(/^.*\/(deploy|tandem-deploy-conf-\w+)\//, ''));
  assert.deepEqual(names.sort(), ['kubernetes_configmap.yaml.tandem.yaml', 'systemd/tandem.yaml', 'tandem.yaml'], 'the container, Kubernetes and systemd configs');
  try {
    await loadEveryNode([...await exampleFiles(), ...deploy]);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

async function loadEveryNode(files: string[]): Promise<void> {
  for (const file of files) {
    const plain = await loadConfigFile(file, { env });
    if (!plain.ok) assert.fail(`${file} does not load:\n${plain.errors.join('\n')}`);
    for (const node of plain.config.ha?.nodes ?? []) {
      const asNode = await loadConfigFile(file, { env, node: node.id });
      if (!asNode.ok) assert.fail(`${file} does not load as --node ${node.id}:\n${asNode.errors.join('\n')}`);
    }
  }
}

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

test('the etcd example is three nodes and three VIPs, each VIP preferred by a different node', async () => {
  const result = await loadConfigFile(join(confDir, 'etcd-three-nodes.yaml'), { env: {} });
  assert.ok(result.ok, result.ok ? '' : result.errors.join('\n'));
  const ha = result.config.ha;
  assert.ok(ha !== null);
  assert.equal(ha.store, 'etcd');
  assert.equal(ha.etcd?.endpoints.length, 3);
  assert.deepEqual(ha.nodes.map((n) => n.id), ['lb1', 'lb2', 'lb3']);
  const preferred = ha.vips.map((v) => Object.entries(v.priority).sort((a, b) => b[1] - a[1])[0][0]);
  assert.deepEqual(preferred, ['lb1', 'lb2', 'lb3']);
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
