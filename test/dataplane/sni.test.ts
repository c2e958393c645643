import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { connect as tlsConnect, type SecureVersion } from 'node:tls';
import { promisify } from 'node:util';
import { TestCa, type CertFiles } from '../helpers/certs.ts';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { config } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

// Real clients: openssl s_client with -servername for each certificate, curl for requests.

const run = promisify(execFile);
const ca = new TestCa();
let fallback: CertFiles;
let api: CertFiles;
let client: CertFiles;
let backend: TestBackend;
let t: TandemProcess;

/** The subject CN of the certificate the listener presents for `servername` (null: no SNI). */
async function presented(address: string, servername: string | null, extra: string[] = []): Promise<string> {
  const args = ['s_client', '-connect', address, ...(servername === null ? ['-noservername'] : ['-servername', servername]), ...extra];
  const child = run('openssl', args, { timeout: 20_000 });
  child.child.stdin!.end();
  const { stdout } = await child;
  const m = /^subject=.*CN\s*=\s*([^\s,/]+)/m.exec(stdout);
  assert.ok(m !== null, `no subject in s_client output:\n${stdout}`);
  return m[1];
}

/** The protocol a Node TLS client held to one version negotiates with `address`, or why it could not. */
function negotiate(address: string, version: SecureVersion): Promise<string> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  return new Promise((resolve) => {
    const s = tlsConnect({ host, port, servername: 'api.test', minVersion: version, maxVersion: version, rejectUnauthorized: false });
    s.once('secureConnect', () => {
      resolve(s.getProtocol() ?? 'unknown');
      s.destroy();
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(`refused: ${err.code ?? err.message}`));
    s.setTimeout(20_000, () => {
      resolve('no answer');
      s.destroy();
    });
  });
}

/** Exit status and output of s_client with these options. */
async function handshake(address: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const child = run('openssl', ['s_client', '-connect', address, ...args], { timeout: 20_000 });
    child.child.stdin!.end();
    const { stdout, stderr } = await child;
    return { ok: /^\s*Protocol\s*:\s*TLSv1\.[23]/m.test(stdout) && !/alert/i.test(stderr), out: stdout + stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

before(async () => {
  fallback = ca.issue('default.test');
  api = ca.issue('api.test', ['api.test', 'www.api.test', '*.apps.test']);
  client = ca.issue('client.test', [], true);
  backend = await startBackend({ name: 'b' });
  t = await startTandem(config({
    listeners: [
      { name: 'sni', address: '127.0.0.1:0', tls: { certificates: [fallback, api] } },
      { name: 'strict', address: '127.0.0.1:0', tls: { ...api, minVersion: 'TLSv1.3' } },
      { name: 'mtls', address: '127.0.0.1:0', tls: { ...api, clientCa: ca.cert } },
    ],
    routes: [{ name: 'all', pool: 'p' }],
    pools: { p: { backends: [{ name: 'b', url: backend.url }] } },
  }));
});

after(async () => {
  await t?.stop();
  await backend?.close();
});

test('the certificate is chosen by SNI: exact names, one-label wildcards, the first as default', async () => {
  const sni = t.listeners.get('sni')!;
  assert.equal(await presented(sni, 'api.test'), 'api.test');
  assert.equal(await presented(sni, 'WWW.API.test'), 'api.test');
  assert.equal(await presented(sni, 'shop.apps.test'), 'api.test');
  // A wildcard covers one label: a.b.apps.test and apps.test itself get the default.
  assert.equal(await presented(sni, 'a.b.apps.test'), 'default.test');
  assert.equal(await presented(sni, 'apps.test'), 'default.test');
  assert.equal(await presented(sni, 'unknown.test'), 'default.test');
  assert.equal(await presented(sni, null), 'default.test');
  // The chain verifies against the test CA for the name asked.
  const verified = await handshake(sni, ['-servername', 'shop.apps.test', '-CAfile', ca.cert, '-verify_hostname', 'shop.apps.test', '-verify_return_error']);
  assert.match(verified.out, /Verify return code: 0 \(ok\)/);
});

test('requests reach the backend over each certificate (curl with --resolve and the CA)', async () => {
  const port = t.listeners.get('sni')!.split(':')[1];
  for (const name of ['api.test', 'shop.apps.test']) {
    const { stdout } = await run('curl', ['-sS', '--cacert', ca.cert, '--resolve', `${name}:${port}:127.0.0.1`, `https://${name}:${port}/`], { timeout: 20_000 });
    assert.equal(stdout, 'b');
  }
});

test('TLS 1.2 is the minimum by default; minVersion TLSv1.3 refuses 1.2', async () => {
  const sni = t.listeners.get('sni')!;
  assert.equal(await negotiate(sni, 'TLSv1.2'), 'TLSv1.2');
  const old = await handshake(sni, ['-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0']);
  assert.equal(old.ok, false, old.out);
  const strict = t.listeners.get('strict')!;
  assert.equal(await negotiate(strict, 'TLSv1.3'), 'TLSv1.3');
  assert.match(await negotiate(strict, 'TLSv1.2'), /^refused: /);
});

test('clientCa: a client without a certificate from that CA is refused, one with it is served', async () => {
  const port = t.listeners.get('mtls')!.split(':')[1];
  const url = `https://api.test:${port}/`;
  const base = ['-sS', '--cacert', ca.cert, '--resolve', `api.test:${port}:127.0.0.1`];
  await assert.rejects(run('curl', [...base, url], { timeout: 20_000 }));
  const { stdout } = await run('curl', [...base, '--cert', client.cert, '--key', client.key, url], { timeout: 20_000 });
  assert.equal(stdout, 'b');
});
