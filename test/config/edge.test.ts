import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfigText } from '../../src/config/load.ts';

// The edge keys (route actions, TLS listeners and pools, http2) are read like every other
// key: a mistake is reported as FILE:LINE:COL: key.path: what is wrong.

const dir = mkdtempSync(join(tmpdir(), 'tandem-edge-config-'));
const file = join(dir, 'tandem.yaml');
const cert = join(dir, 'a.crt');
const key = join(dir, 'a.key');
execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=a.test', '-keyout', key, '-out', cert], { stdio: 'ignore' });

const base = (routeExtra: string, listenerExtra = '', poolExtra = '', url = 'http://127.0.0.1:9000') => `listeners:
  - name: web
    address: 127.0.0.1:0
${listenerExtra}
routes:
  - name: r
    pool: p
${routeExtra}
pools:
  p:
    backends:
      - { name: b, url: ${url} }
${poolExtra}
`;

function errorsOf(text: string): string[] {
  const result = loadConfigText(text, file, { env: {} });
  assert.equal(result.ok, false, 'should not load');
  return result.ok ? [] : result.errors;
}

function says(errors: string[], at: string, text: string | RegExp): void {
  const line = errors.find((e) => e.startsWith(`${file}:`) && e.includes(` ${at}: `));
  assert.ok(line !== undefined, `no error at ${at} in:\n${errors.join('\n')}`);
  if (typeof text === 'string') assert.ok(line.includes(text), line);
  else assert.match(line, text);
  assert.match(line, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:\\d+:\\d+: `));
}

test('route actions load into their runtime form', () => {
  const result = loadConfigText(base(`    redirect: { scheme: https, code: 308 }
    allow: [10.0.0.0/8]`), file, { env: {} });
  assert.ok(result.ok, result.ok ? '' : result.errors.join('\n'));
  const r = result.config.routes[0];
  assert.deepEqual(r.redirect, { scheme: 'https', host: null, port: null, path: null, code: 308 });
  assert.deepEqual(r.allow, ['10.0.0.0/8']);
  const h = loadConfigText(base(`    headers: { request: { set: { X-A: "1" }, remove: [X-B] } }`), file, { env: {} });
  assert.ok(h.ok);
  assert.deepEqual(h.config.routes[0].headers, { request: { set: [['x-a', '1']], remove: ['x-b'] }, response: { set: [], remove: [] } });
});

test('route action mistakes are located', () => {
  says(errorsOf(base('    redirect: { scheme: https, code: 200 }')), 'routes[0].redirect.code', 'must be a redirect status');
  says(errorsOf(base('    redirect: { scheme: ftp }')), 'routes[0].redirect.scheme', 'must be one of http, https');
  says(errorsOf(base('    redirect: { code: 301 }')), 'routes[0].redirect', 'same URL');
  says(errorsOf(base('    rewrite: { stripPrefix: api }')), 'routes[0].rewrite.stripPrefix', 'must start with /');
  says(errorsOf(base('    rewrite: {}')), 'routes[0].rewrite', 'needs stripPrefix, addPrefix');
  says(errorsOf(base('    headers: { request: { set: { Host: x } } }')), 'routes[0].headers.request.set.Host', 'managed by tandem');
  says(errorsOf(base('    headers: { response: { remove: [content-length] } }')), 'routes[0].headers.response.remove[0]', 'managed by tandem');
  says(errorsOf(base('    headers: { request: { set: { x-a: "a\\r\\nb: c" } } }')), 'routes[0].headers.request.set.x-a', 'control characters');
  says(errorsOf(base('    allow: [10.0.0.300/8]')), 'routes[0].allow[0]', 'is not an IP address');
  says(errorsOf(base(`    redirect: { scheme: https }
    rewrite: { addPrefix: /x }`)), 'routes[0].rewrite', 'no effect');
});

test('listener TLS: several certificates, defaults, and located mistakes', () => {
  const ok = loadConfigText(base('', `    http2: true
    tls:
      certificates:
        - { cert: ${cert}, key: ${key} }
        - { cert: ${cert}, key: ${key} }`), file, { env: {} });
  assert.ok(ok.ok, ok.ok ? '' : ok.errors.join('\n'));
  const tls = ok.config.listeners[0].tls!;
  assert.equal(tls.certificates.length, 2);
  assert.equal(tls.minVersion, 'TLSv1.2');
  assert.equal(ok.config.listeners[0].http2, true);
  const single = loadConfigText(base('', `    tls: { cert: ${cert}, key: ${key}, minVersion: TLSv1.3 }`), file, { env: {} });
  assert.ok(single.ok);
  assert.deepEqual(single.config.listeners[0].tls!.certificates, [{ cert, key }]);

  says(errorsOf(base('', '    tls: { minVersion: TLSv1.2 }')), 'listeners[0].tls', 'needs a certificate');
  says(errorsOf(base('', `    tls: { cert: ${cert} }`)), 'listeners[0].tls.key', 'is missing');
  says(errorsOf(base('', `    tls: { cert: ${cert}, key: ${key}, certificates: [{ cert: ${cert}, key: ${key} }] }`)), 'listeners[0].tls.certificates', 'cannot be given with cert');
  says(errorsOf(base('', `    tls: { certificates: [{ cert: ${dir}/none.crt, key: ${key} }] }`)), 'listeners[0].tls.certificates[0].cert', 'does not exist');
  says(errorsOf(base('', `    tls: { cert: ${cert}, key: ${key}, minVersion: TLSv1.1 }`)), 'listeners[0].tls.minVersion', 'must be one of TLSv1.2, TLSv1.3');
  says(errorsOf(base('', '    http2: yes please')), 'listeners[0].http2', 'true or false');
  says(errorsOf(base('', '    proxyProtocol: { from: [] }')), 'listeners[0].proxyProtocol.from', 'at least 1');
  says(errorsOf(base('', '    proxyProtocol: { from: [nowhere] }')), 'listeners[0].proxyProtocol.from[0]', 'is not an IP address');
});

test('pool TLS: https backends only, files readable, cert with key', () => {
  const ok = loadConfigText(base('', '', `    tls: { ca: ${cert}, servername: a.test }`, 'https://127.0.0.1:9443'), file, { env: {} });
  assert.ok(ok.ok, ok.ok ? '' : ok.errors.join('\n'));
  assert.deepEqual(ok.config.pools.get('p')!.tls, { ca: cert, servername: 'a.test', verify: true, cert: null, key: null });
  says(errorsOf(base('', '', `    tls: { ca: ${cert} }`)), 'pools.p.tls', 'https:// backends only');
  says(errorsOf(base('', '', `    tls: { cert: ${cert} }`, 'https://127.0.0.1:9443')), 'pools.p.tls.key', 'needs both cert and key');
  says(errorsOf(base('', '', `    tls: { ca: ${dir}/none.pem }`, 'https://127.0.0.1:9443')), 'pools.p.tls.ca', 'does not exist');
  says(errorsOf(base('', '', '    tls: { servername: "bad name" }', 'https://127.0.0.1:9443')), 'pools.p.tls.servername', 'not a host name');
});

test('pool proxyProtocol: v1 or v2, located when anything else', () => {
  for (const v of ['v1', 'v2'] as const) {
    const result = loadConfigText(base('', '', `    proxyProtocol: ${v}`), file, { env: {} });
    assert.ok(result.ok, result.ok ? '' : result.errors.join('\n'));
    assert.equal(result.config.pools.get('p')!.proxyProtocol, v);
  }
  const off = loadConfigText(base(''), file, { env: {} });
  assert.ok(off.ok);
  assert.equal(off.config.pools.get('p')!.proxyProtocol, null);
  says(errorsOf(base('', '', '    proxyProtocol: v3')), 'pools.p.proxyProtocol', /v1.*v2/);
  says(errorsOf(base('', '', '    proxyProtocol: true')), 'pools.p.proxyProtocol', /v1.*v2/);
  says(errorsOf(base('', '', '    proxyProtcol: v1')), 'pools.p.proxyProtcol', 'proxyProtocol');
});

test('route compress: true, false or { types, minSize }, located mistakes', () => {
  const on = loadConfigText(base('    compress: true'), file, { env: {} });
  assert.ok(on.ok, on.ok ? '' : on.errors.join('\n'));
  assert.ok(on.config.routes[0].compress!.types.includes('text/*'));
  assert.equal(on.config.routes[0].compress!.minSize, 1024);
  const off = loadConfigText(base('    compress: false'), file, { env: {} });
  assert.ok(off.ok);
  assert.equal(off.config.routes[0].compress, null);
  const custom = loadConfigText(base('    compress: { types: [Text/HTML, "application/*"], minSize: 0 }'), file, { env: {} });
  assert.ok(custom.ok, custom.ok ? '' : custom.errors.join('\n'));
  assert.deepEqual(custom.config.routes[0].compress, { types: ['text/html', 'application/*'], minSize: 0 });
  says(errorsOf(base('    compress: yes-please')), 'routes[0].compress', 'true, false, or a mapping { types, minSize }');
  says(errorsOf(base('    compress: { types: [html] }')), 'routes[0].compress.types[0]', 'is not a media type');
  says(errorsOf(base('    compress: { minSize: -1 }')), 'routes[0].compress.minSize', 'from 0 to');
  says(errorsOf(base('    compress: { level: 9 }')), 'routes[0].compress.level', /unknown|not a key/i);
  says(errorsOf(base(`    redirect: { scheme: https }
    compress: true`)), 'routes[0].compress', 'has no effect on a route that redirects');
});

test('engine: fast on plain HTTP/1.1 listeners by default, node where TLS, HTTP/2 or PROXY is on; fast there is a located mistake', () => {
  const plain = loadConfigText(base(''), file, { env: {} });
  assert.ok(plain.ok);
  assert.equal(plain.config.listeners[0].engine, process.env.TANDEM_ENGINE === 'node' ? 'node' : 'fast');
  const pinned = loadConfigText(base('', '    engine: node'), file, { env: {} });
  assert.ok(pinned.ok);
  assert.equal(pinned.config.listeners[0].engine, 'node');
  const tls = loadConfigText(base('', `    tls: { cert: ${cert}, key: ${key} }`), file, { env: {} });
  assert.ok(tls.ok);
  assert.equal(tls.config.listeners[0].engine, 'node');
  says(errorsOf(base('', `    engine: fast\n    tls: { cert: ${cert}, key: ${key} }`)), 'listeners[0].engine', 'serves plain HTTP/1.1; this listener sets tls');
  says(errorsOf(base('', '    engine: fast\n    http2: true')), 'listeners[0].engine', 'sets http2');
  says(errorsOf(base('', '    engine: fast\n    proxyProtocol: { from: [10.0.0.0/8] }')), 'listeners[0].engine', 'sets proxyProtocol');
  says(errorsOf(base('', '    engine: turbo')), 'listeners[0].engine', 'must be one of fast, node');
});
