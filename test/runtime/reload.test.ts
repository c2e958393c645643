import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import autocannon from 'autocannon';
import { createServer } from 'node:http';
import { once } from 'node:events';
import { connect, type AddressInfo } from 'node:net';
import { request } from 'undici';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { config, singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const backends: TestBackend[] = [];
const procs: TandemProcess[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  await Promise.all(backends.map((b) => b.close()));
});

describe('hot reload', () => {
  test('reloading every second with changed weights under load gives no non-2xx and no socket error', async () => {
    const [a, b] = await Promise.all([startBackend({ name: 'a' }), startBackend({ name: 'b' })]);
    backends.push(a, b);
    const conf = (wa: number, wb: number) => singlePool([
      { name: 'a', url: a.url, weight: wa },
      { name: 'b', url: b.url, weight: wb },
    ], { healthCheck: { path: '/healthz', interval: '500ms', timeout: '200ms' } });
    const t = await startTandem(conf(1, 1));
    procs.push(t);
    const load = autocannon({ url: `${t.url}/`, connections: 20, duration: 10 });
    const outcomes: string[] = [];
    for (let i = 1; i <= 9; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      outcomes.push(await t.reload(conf(1 + (i % 4), 1 + ((i + 2) % 3))));
    }
    const result = await load;
    assert.deepEqual(outcomes, Array(9).fill('reloaded'));
    assert.ok(result.requests.total > 1000, `load ran (${result.requests.total} requests)`);
    assert.equal(result.non2xx, 0, 'non-2xx responses');
    assert.equal(result.errors, 0, 'socket errors');
    assert.equal(result.timeouts, 0, 'timeouts');
    // The last weights (1+9%4=2, 1+11%3=3) are in force: b now gets 3 of every 5.
    // (autocannon resolves with its last requests still landing: let them.)
    await new Promise((r) => setTimeout(r, 300));
    const before = { a: a.requests, b: b.requests };
    for (let i = 0; i < 50; i++) await (await request(`${t.url}/`)).body.text();
    assert.deepEqual({ a: a.requests - before.a, b: b.requests - before.b }, { a: 20, b: 30 });
  });

  test('a broken file is rejected with FILE:LINE:COL, and traffic goes on with the old config', async () => {
    const a = await startBackend({ name: 'a' });
    backends.push(a);
    const good = singlePool([{ name: 'a', url: a.url }]);
    const t = await startTandem(good);
    procs.push(t);
    const broken = good.replace(/weight: \d+|url: /, 'wieght: 2\n        url: ');
    const res = await fetch(`${t.admin}/api/v1/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } }).catch(() => null);
    assert.ok(res === null || res.status === 200, 'reloading an unchanged file works');
    const outcome = await t.reload(broken);
    assert.match(outcome, /reload rejected/);
    assert.match(outcome, /tandem\.yaml:\d+:\d+: pools\.web\.backends\[0\]/);
    const r = await request(`${t.url}/`);
    assert.equal(r.statusCode, 200);
    assert.equal(await r.body.text(), 'a');
    if (t.admin !== null) {
      const api = await fetch(`${t.admin}/api/v1/reload`, { method: 'POST', headers: { 'content-type': 'application/json' } });
      assert.equal(api.status, 400);
      const body = await api.json() as { errors: string[] };
      assert.match(body.errors.join('\n'), /tandem\.yaml:\d+:\d+: pools\.web\.backends\[0\]/);
    }
  });
});

describe('reload and connections that outlive their config', () => {
  test('a keep-alive connection of a listener removed by a reload is answered 503 and closed, not routed by another listener', async () => {
    // The public backend answers its first request slowly, so the client's connection is
    // busy (not idle, not closed) while the reload removes its listener.
    let first = true;
    const pub = createServer((_req, res) => {
      const delay = first ? 800 : 0;
      first = false;
      setTimeout(() => res.end('pub'), delay);
    });
    pub.listen(0, '127.0.0.1');
    await once(pub, 'listening');
    const i = await startBackend({ name: 'int' });
    backends.push(i);
    const pubUrl = `http://127.0.0.1:${(pub.address() as AddressInfo).port}`;
    const both = config({
      listeners: [{ name: 'public', address: '127.0.0.1:0' }, { name: 'internal', address: '127.0.0.1:0' }],
      routes: [
        { name: 'pub', listeners: ['public'], match: { pathPrefix: '/' }, pool: 'pub' },
        { name: 'int', listeners: ['internal'], match: { pathPrefix: '/' }, pool: 'int' },
      ],
      pools: { pub: { backends: [{ name: 'pub', url: pubUrl }] }, int: { backends: [{ name: 'int', url: i.url }] } },
    });
    const t = await startTandem(both);
    procs.push(t);
    const [host, port] = t.listeners.get('public')!.split(':');
    const socket = connect(Number(port), host);
    await once(socket, 'connect');
    let text = '';
    socket.on('data', (d) => { text += d.toString(); });
    socket.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 200));
    const onlyInternal = config({
      listeners: [{ name: 'internal', address: '127.0.0.1:0' }],
      routes: [{ name: 'int', match: { pathPrefix: '/' }, pool: 'int' }],
      pools: { int: { backends: [{ name: 'int', url: i.url }] } },
    });
    assert.equal(await t.reload(onlyInternal), 'reloaded');
    // The slow request finishes; the next one on the same connection meets the retired listener.
    const deadline = Date.now() + 3000;
    while (!text.endsWith('pub') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    socket.write('GET /next HTTP/1.1\r\nHost: x\r\n\r\n');
    await once(socket, 'close');
    const second = text.slice(text.indexOf('pub') + 3);
    assert.match(second, /^HTTP\/1\.1 503/);
    assert.match(second, /connection: close/i);
    assert.match(second, /TANDEM_ERR_LISTENER_REMOVED/);
    assert.equal(i.requests, 0, 'nothing reached the other listener\'s pool');
    pub.closeAllConnections();
    pub.close();
  });

  test('a download started before a reload still completes when SIGTERM follows', async () => {
    const slow = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': '20' });
      res.write('0123456789');
      setTimeout(() => res.end('abcdefghij'), 1500);
    });
    slow.listen(0, '127.0.0.1');
    await once(slow, 'listening');
    const url = `http://127.0.0.1:${(slow.address() as AddressInfo).port}`;
    const t = await startTandem(singlePool([{ name: 's', url }]));
    procs.push(t);
    const pending = request(`${t.url}/`).then(async (r) => r.body.text());
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await t.reload(singlePool([{ name: 's', url, weight: 2 }])), 'reloaded');
    const code = t.stop('SIGTERM');
    assert.equal(await pending, '0123456789abcdefghij');
    assert.equal(await code, 0);
    slow.closeAllConnections();
    slow.close();
  });
});
