// `ha.etcd` as `tandem check` sees it: every mistake at its FILE:LINE:COL and key path,
// TLS files resolved against the config's directory, and the settings that load.

import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfigFile } from '../../src/config/load.ts';

const dir = mkdtempSync(join(tmpdir(), 'tandem-etcd-config-'));
writeFileSync(join(dir, 'ca.pem'), '-----BEGIN CERTIFICATE-----\n');
writeFileSync(join(dir, 'client.pem'), '-----BEGIN CERTIFICATE-----\n');
writeFileSync(join(dir, 'client-key.pem'), '-----BEGIN PRIVATE KEY-----\n');

function write(name: string, ha: string): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    `listeners: [{ name: web, address: "127.0.0.1:0" }]
routes: [{ name: all, pool: web }]
pools: { web: { backends: [{ name: a, url: "http://127.0.0.1:9" }] } }
ha:
${ha}
  nodes: { lb1: { address: 127.0.0.1:7946 }, lb2: { address: 127.0.0.1:7947 } }
  vips: [{ name: vip-a, address: 10.0.0.100/24, interface: eth0 }]
`,
  );
  return file;
}

test('a complete etcd section loads, with TLS files resolved against the config directory', async () => {
  const file = write('good.yaml', `  store: etcd
  lease: { duration: 2s, renewEvery: 200ms }
  etcd:
    endpoints: [https://10.0.0.21:2379, https://10.0.0.22:2379]
    prefix: /tandem/site-a
    tls: { ca: ca.pem, cert: client.pem, key: client-key.pem }
    auth: { user: tandem, password: "\${TANDEM_ETCD_PASSWORD}" }`);
  const result = await loadConfigFile(file, { env: { TANDEM_ETCD_PASSWORD: 'pw' } });
  assert.ok(result.ok, result.ok ? '' : result.errors.join('\n'));
  assert.deepEqual(result.config.ha?.etcd, {
    endpoints: ['https://10.0.0.21:2379', 'https://10.0.0.22:2379'],
    prefix: '/tandem/site-a',
    tls: { ca: join(dir, 'ca.pem'), cert: join(dir, 'client.pem'), key: join(dir, 'client-key.pem') },
    auth: { user: 'tandem', password: 'pw' },
  });
});

test('every etcd mistake is reported at its FILE:LINE:COL and key path in one run', async () => {
  const file = write('bad.yaml', `  store: etcd
  lease: { duration: 1500ms, renewEvery: 200ms }
  etcd:
    endpoints: [http://10.0.0.21:2379, "not a url"]
    prefix: tandem
    tls: { ca: missing-ca.pem, cert: client.pem }
    auth: { user: "", password: "" }`);
  const result = await loadConfigFile(file, { env: {} });
  assert.equal(result.ok, false);
  const errors = result.ok ? [] : result.errors;
  const at = (path: string, says: RegExp) => {
    const line = errors.find((e) => e.includes(` ${path}: `));
    assert.ok(line !== undefined, `no error for ${path} in:\n${errors.join('\n')}`);
    assert.match(line, new RegExp(`^${file.replaceAll('.', '\\.')}:\\d+:\\d+: `), line);
    assert.match(line, says);
  };
  at('ha.etcd.endpoints[1]', /URL/);
  at('ha.etcd.prefix', /must start with \//);
  at('ha.etcd.tls.ca', /missing-ca\.pem does not exist/);
  at('ha.etcd.tls.cert', /needs key too/);
  at('ha.etcd.endpoints[0]', /plain HTTP, but etcd\.tls is set/);
  at('ha.etcd.auth.user', /is empty/);
  at('ha.etcd.auth.password', /is empty/);
  at('ha.lease.duration', /whole number of seconds with store: etcd/);
  // Line and column point at the value: endpoints[0] is on line 8 (after the three lines of the file's head).
  assert.ok(errors.some((e) => e.startsWith(`${file}:8:17: ha.etcd.endpoints[0]:`)), errors.join('\n'));
});

test('store: etcd without an etcd section, and an etcd section with store: peer, are errors', async () => {
  const missing = await loadConfigFile(write('missing.yaml', '  store: etcd'), { env: {} });
  assert.equal(missing.ok, false);
  assert.match(missing.ok ? '' : missing.errors.join('\n'), /ha\.etcd: is missing \(store: etcd needs etcd/);
  const unused = await loadConfigFile(write('unused.yaml', `  store: peer
  secret: a-secret-of-enough-length
  etcd: { endpoints: [http://127.0.0.1:2379] }`), { env: {} });
  assert.equal(unused.ok, false);
  assert.match(unused.ok ? '' : unused.errors.join('\n'), /ha\.etcd: is only used with store: etcd/);
});
