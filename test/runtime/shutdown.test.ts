import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

let server: Server;
const procs: TandemProcess[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  server?.closeAllConnections();
  server?.close();
});

test('SIGTERM during slow requests lets every request in flight complete, then exits 0', async () => {
  let arrived = 0;
  server = createServer((_req, res) => {
    arrived++;
    setTimeout(() => res.end('slow but done'), 1000);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const t = await startTandem(singlePool([{ name: 'slow', url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }]));
  procs.push(t);
  const inFlight = Array.from({ length: 20 }, () => request(`${t.url}/`).then(async (r) => ({ status: r.statusCode, body: await r.body.text(), connection: r.headers.connection })));
  // SIGTERM once every request is in flight (at the backend); a connection still in the
  // accept queue when tandem stops accepting is reset, as docs/architecture.md says.
  for (const deadline = performance.now() + 20_000; arrived < inFlight.length;) {
    assert.ok(performance.now() < deadline, `${arrived} of ${inFlight.length} requests reached the backend`);
    await new Promise((r) => setTimeout(r, 10));
  }
  const code = t.stop('SIGTERM');
  const results = await Promise.all(inFlight);
  for (const r of results) {
    assert.equal(r.status, 200);
    assert.equal(r.body, 'slow but done');
  }
  assert.equal(await code, 0);
  // New connections are refused once it stopped accepting.
  await assert.rejects(request(`${t.url}/`));
});

test('after N proxied requests the sum of tandem_requests_total is exactly N', async () => {
  const s = createServer((_req, res) => res.end('ok'));
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const t = await startTandem(singlePool([{ name: 'ok', url: `http://127.0.0.1:${(s.address() as AddressInfo).port}` }]));
  procs.push(t);
  const N = 237;
  for (let i = 0; i < N; i++) await (await request(`${t.url}/n/${i}`)).body.text();
  const text = await (await fetch(`${t.admin}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(/^tandem_requests_total\{[^}]*\} (\d+)$/gm)) sum += Number(m[1]);
  assert.equal(sum, N);
  assert.match(text, /tandem_requests_total\{listener="web",route="all",pool="web",backend="ok",code="200"\} 237/);
  await t.stop();
  s.closeAllConnections();
  s.close();
});
