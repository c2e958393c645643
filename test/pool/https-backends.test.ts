import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { readFileSync } from 'node:fs';
import { request } from 'undici';
import { TestCa } from '../helpers/certs.ts';
import { config } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

// HTTPS backends with a CA of their own: proxied requests and health checks both use the
// pool's TLS settings (CA, SNI name, client certificate), and connections are reused.

interface HttpsBackend {
  server: Server;
  url: string;
  /** TLS handshakes completed, and the SNI name of the last one (false: none sent). */
  handshakes: number;
  lastServername: string | false | null;
  healthChecks: number;
}

const ca = new TestCa('backend CA');
const other = new TestCa('unrelated CA');
const backends: HttpsBackend[] = [];
let t: TandemProcess;

async function httpsBackend(name: string, opts: { clientCa?: string } = {}): Promise<HttpsBackend> {
  const leaf = ca.issue('backend.test', ['backend.test', 'IP:127.0.0.1']);
  const b: HttpsBackend = { server: null as unknown as Server, url: '', handshakes: 0, lastServername: null, healthChecks: 0 };
  b.server = createServer({
    cert: readFileSync(leaf.cert), key: readFileSync(leaf.key),
    ...(opts.clientCa === undefined ? {} : { ca: readFileSync(opts.clientCa), requestCert: true, rejectUnauthorized: true }),
  }, (req, res) => {
    req.resume();
    if (req.url === '/healthz') b.healthChecks++;
    const peer = (req.socket as TLSSocket).getPeerCertificate();
    res.end(`${name} ${peer?.subject?.CN ?? '-'}`);
  });
  b.server.on('secureConnection', (s: TLSSocket) => {
    b.handshakes++;
    b.lastServername = s.servername;
  });
  await new Promise<void>((resolve) => b.server.listen(0, '127.0.0.1', resolve));
  b.url = `https://127.0.0.1:${(b.server.address() as AddressInfo).port}`;
  backends.push(b);
  return b;
}

let named: HttpsBackend;
let byIp: HttpsBackend;
let untrusted: HttpsBackend;
let unverified: HttpsBackend;
let mtls: HttpsBackend;

before(async () => {
  named = await httpsBackend('named');
  byIp = await httpsBackend('by-ip');
  untrusted = await httpsBackend('untrusted');
  unverified = await httpsBackend('unverified');
  const client = ca.issue('tandem-client', [], true);
  mtls = await httpsBackend('mtls', { clientCa: ca.cert });
  const health = { path: '/healthz', interval: '500ms', timeout: '400ms', rise: 1, fall: 5 };
  t = await startTandem(config({
    routes: ['named', 'ip', 'untrusted', 'unverified', 'mtls'].map((p) => ({ name: p, match: { pathPrefix: `/${p}` }, pool: p })),
    pools: {
      named: { backends: [{ name: 'n', url: named.url }], tls: { ca: ca.cert, servername: 'backend.test' }, healthCheck: health },
      ip: { backends: [{ name: 'i', url: byIp.url }], tls: { ca: ca.cert } },
      untrusted: { backends: [{ name: 'u', url: untrusted.url }], tls: { ca: other.cert }, retries: 0 },
      unverified: { backends: [{ name: 'v', url: unverified.url }], tls: { verify: false } },
      mtls: { backends: [{ name: 'm', url: mtls.url }], tls: { ca: ca.cert, ...client } },
    },
  }));
});

after(async () => {
  await t?.stop();
  for (const b of backends) b.server.close();
});

async function get(path: string): Promise<{ status: number; body: string }> {
  const r = await request(`${t.url}${path}`, { headers: { host: 'client-facing.example' } });
  return { status: r.statusCode, body: await r.body.text() };
}

test('a backend with its own CA is reached with the configured SNI name, and connections are reused', async () => {
  for (let i = 0; i < 20; i++) assert.deepEqual(await get('/named'), { status: 200, body: 'named -' });
  assert.equal(named.lastServername, 'backend.test');
  // 20 sequential requests plus health checks: a handful of handshakes, not one per request.
  assert.ok(named.handshakes <= 4, `handshakes: ${named.handshakes}`);
});

test('health checks run over the same TLS settings', async () => {
  const start = named.healthChecks;
  const deadline = Date.now() + 30_000;
  let state = '';
  while (Date.now() < deadline) {
    const status = await (await fetch(`${t.admin}/api/v1/status`)).json() as { pools: { name: string; backends: { state: string }[] }[] };
    state = status.pools.find((p) => p.name === 'named')!.backends[0].state;
    if (state === 'up' && named.healthChecks >= start + 2) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(named.healthChecks >= start + 2, 'health checks did not reach the https backend');
  assert.equal(state, 'up');
});

test('a backend addressed by IP is verified against its IP and gets no SNI, never the client Host', async () => {
  assert.deepEqual(await get('/ip'), { status: 200, body: 'by-ip -' });
  assert.equal(byIp.lastServername, false);
});

test('a certificate from another CA is refused with 502; verify: false accepts it', async () => {
  const refused = await get('/untrusted');
  assert.equal(refused.status, 502);
  assert.match(refused.body, /"pool":"untrusted"/);
  assert.deepEqual(await get('/unverified'), { status: 200, body: 'unverified -' });
});

test('a backend that asks for a client certificate gets the pool one', async () => {
  assert.deepEqual(await get('/mtls'), { status: 200, body: 'mtls tandem-client' });
});
