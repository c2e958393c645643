import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { request } from 'undici';
import { config, singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const servers: Server[] = [];
const procs: TandemProcess[] = [];

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; server: Server; sockets: Set<Socket> }> {
  const server = createServer(handler);
  const sockets = new Set<Socket>();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, sockets };
}

async function tandem(yaml: string): Promise<TandemProcess> {
  const t = await startTandem(yaml);
  procs.push(t);
  return t;
}

/** Sends raw bytes and collects everything the server answers until it closes. */
async function raw(url: string, bytes: string, waitMs = 2000): Promise<{ text: string; closed: boolean }> {
  const u = new URL(url);
  const socket = connect(Number(u.port), u.hostname);
  await once(socket, 'connect');
  socket.write(bytes);
  let text = '';
  socket.on('data', (d) => { text += d.toString('latin1'); });
  const closed = await Promise.race([
    once(socket, 'close').then(() => true),
    new Promise<boolean>((r) => setTimeout(() => r(false), waitMs)),
  ]);
  socket.destroy();
  return { text, closed };
}

after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  for (const s of servers) s.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

describe('headers', () => {
  test('hop-by-hop headers are removed both ways and forwarding headers are set', async () => {
    let seen: IncomingMessage['headers'] = {};
    const b = await serve((req, res) => {
      seen = req.headers;
      res.setHeader('keep-alive', 'timeout=5');
      res.setHeader('x-secret-hop', 'no');
      res.setHeader('connection', 'x-secret-hop');
      res.setHeader('x-kept', 'yes');
      res.end('ok');
    });
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const res = await raw(t.url, 'GET /h HTTP/1.1\r\nHost: shop.example\r\nConnection: x-drop-me, close\r\nX-Drop-Me: 1\r\nTE: trailers\r\nProxy-Authorization: secret\r\nKeep-Alive: 300\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Custom: kept\r\n\r\n');
    assert.match(res.text, /^HTTP\/1\.1 200/);
    assert.match(res.text, /x-kept: yes/i);
    assert.doesNotMatch(res.text, /x-secret-hop/i);
    assert.doesNotMatch(res.text, /keep-alive: timeout/i);
    assert.equal(seen['x-drop-me'], undefined);
    assert.equal(seen.te, undefined);
    assert.equal(seen['proxy-authorization'], undefined);
    assert.equal(seen['keep-alive'], undefined);
    assert.equal(seen['x-custom'], 'kept');
    assert.equal(seen.host, 'shop.example', 'Host passes through by default');
    // 127.0.0.1 is not a trusted proxy here: the forged X-Forwarded-* are replaced.
    assert.equal(seen['x-forwarded-for'], '127.0.0.1');
    assert.equal(seen['x-forwarded-proto'], 'http');
    assert.equal(seen['x-forwarded-host'], 'shop.example');
    assert.equal(seen.via, '1.1 tandem');
  });

  test('X-Forwarded-For from a trusted proxy is kept and extended', async () => {
    let seen: IncomingMessage['headers'] = {};
    const b = await serve((req, res) => { seen = req.headers; res.end('ok'); });
    const t = await tandem(singlePool([{ name: 'b', url: b.url }], { hostHeader: 'backend' }, { trustedProxies: ['127.0.0.0/8'] }));
    const r = await request(`${t.url}/`, { headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https', host: 'front.example' } });
    await r.body.text();
    assert.equal(seen['x-forwarded-for'], '203.0.113.9, 127.0.0.1');
    assert.equal(seen['x-forwarded-proto'], 'https');
    assert.equal(seen.host, new URL(b.url).host, 'hostHeader: backend sends the backend\'s own host');
  });
});

describe('errors tandem answers itself', () => {
  test('no matching route is a 404 naming the catalogue code', async () => {
    const b = await serve((_req, res) => res.end('ok'));
    const t = await tandem(config({
      routes: [{ name: 'api', match: { pathPrefix: '/api' }, pool: 'web' }],
      pools: { web: { backends: [{ name: 'b', url: b.url }] } },
    }));
    const r = await request(`${t.url}/other`);
    assert.equal(r.statusCode, 404);
    const body = await r.body.json() as { error: string };
    assert.equal(body.error, 'TANDEM_ERR_NO_ROUTE');
  });

  test('a backend that refuses connections gives a 502 naming the pool', async () => {
    const b = await serve((_req, res) => res.end('ok'));
    const url = b.url;
    await new Promise((r) => b.server.close(r));
    const t = await tandem(singlePool([{ name: 'gone', url }], { retries: 0 }));
    const r = await request(`${t.url}/`);
    assert.equal(r.statusCode, 502);
    assert.deepEqual(await r.body.json(), { error: 'TANDEM_ERR_BACKEND_UNREACHABLE', message: 'backend unreachable', pool: 'web' });
  });

  test('a backend slower than the response timeout gives a 504', async () => {
    const b = await serve((_req, res) => { setTimeout(() => res.end('late'), 2000); });
    const t = await tandem(singlePool([{ name: 'slow', url: b.url }], { timeouts: { response: '300ms' }, retries: 0 }));
    const started = Date.now();
    const r = await request(`${t.url}/`);
    assert.equal(r.statusCode, 504);
    assert.equal((await r.body.json() as { error: string }).error, 'TANDEM_ERR_RESPONSE_TIMEOUT');
    assert.ok(Date.now() - started < 1900, 'answered before the backend did');
  });

  test('a pool with no available backend gives a 503 with Retry-After', async () => {
    const b = await serve((req, res) => { res.statusCode = req.url === '/healthz' ? 500 : 200; res.end(); });
    const t = await tandem(singlePool([{ name: 'sick', url: b.url }], { healthCheck: { path: '/healthz', interval: '100ms', timeout: '50ms', startUnhealthy: true } }));
    const r = await request(`${t.url}/`);
    assert.equal(r.statusCode, 503);
    assert.equal(r.headers['retry-after'], '1');
    assert.equal((await r.body.json() as { error: string }).error, 'TANDEM_ERR_NO_BACKEND');
  });

  test('a backend that dies mid-response cuts the client connection instead of ending the body as complete', async () => {
    const b = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': '100000' });
      res.write(Buffer.alloc(1000, 97));
      setTimeout(() => res.socket?.destroy(), 100);
    });
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const r = await request(`${t.url}/`);
    assert.equal(r.statusCode, 200);
    await assert.rejects(r.body.arrayBuffer());
  });

  test('a chunked response cut short is not passed off as complete either', async () => {
    const b = await serve((_req, res) => {
      res.write('first part');
      setTimeout(() => res.socket?.destroy(), 100);
    });
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const res = await raw(t.url, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 3000);
    assert.ok(res.closed, 'connection closed');
    assert.match(res.text, /first part/);
    assert.doesNotMatch(res.text, /\r\n0\r\n\r\n$/, 'no terminating chunk was sent');
  });
});

describe('hostile and malformed input', () => {
  test('a malformed request line gets a 400 and a closed connection, and other clients are unaffected', async () => {
    const b = await serve((_req, res) => res.end('fine'));
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const bad = await raw(t.url, 'GARBAGE\r\n\r\n');
    assert.match(bad.text, /^HTTP\/1\.1 400/);
    assert.match(bad.text, /TANDEM_ERR_BAD_REQUEST/);
    assert.ok(bad.closed);
    const smuggle = await raw(t.url, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n');
    assert.match(smuggle.text, /^HTTP\/1\.1 400/);
    const r = await request(`${t.url}/`);
    assert.equal(await r.body.text(), 'fine');
  });

  test('an oversized header gets a 431', async () => {
    const b = await serve((_req, res) => res.end('fine'));
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const res = await raw(t.url, `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`);
    assert.match(res.text, /^HTTP\/1\.1 431/);
    assert.ok(res.closed);
  });

  test('a client that never finishes its headers is cut off after headersTimeout', async () => {
    const b = await serve((_req, res) => res.end('fine'));
    const t = await tandem(singlePool([{ name: 'b', url: b.url }], {}, { listeners: [{ name: 'web', address: '127.0.0.1:0', timeouts: { headers: '300ms', request: '500ms' } }] }));
    const res = await raw(t.url, 'GET / HTTP/1.1\r\nHost: x\r\n', 3000);
    assert.ok(res.closed, 'slow client disconnected');
    assert.match(res.text, /^HTTP\/1\.1 408/);
  });

  test('a client that sends its body too slowly is cut off after requestTimeout, and the upstream request is dropped', async () => {
    let upstreamAborted = false;
    const b = await serve((req, res) => {
      req.on('aborted', () => { upstreamAborted = true; });
      req.on('close', () => { if (!req.complete) upstreamAborted = true; });
      req.on('end', () => res.end('got it'));
      req.resume();
    });
    const t = await tandem(singlePool([{ name: 'b', url: b.url }], { retries: 0 }, { listeners: [{ name: 'web', address: '127.0.0.1:0', timeouts: { headers: '300ms', request: '600ms' } }] }));
    const started = Date.now();
    const res = await raw(t.url, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly a part', 4000);
    assert.ok(res.closed, 'the slow client was disconnected');
    assert.ok(Date.now() - started < 3000, `closed after ${Date.now() - started} ms`);
    assert.doesNotMatch(res.text, /got it/);
    const t0 = Date.now();
    while (!upstreamAborted && Date.now() - t0 < 1000) await new Promise((r) => setTimeout(r, 20));
    assert.ok(upstreamAborted, 'the backend saw its request dropped, not left waiting for the rest of the body');
  });

  test('an idle keep-alive client connection is closed after the listener\'s keepAlive timeout', async () => {
    const b = await serve((_req, res) => res.end('fine'));
    const t = await tandem(singlePool([{ name: 'b', url: b.url }], {}, { listeners: [{ name: 'web', address: '127.0.0.1:0', timeouts: { keepAlive: '300ms' } }] }));
    const started = Date.now();
    const res = await raw(t.url, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 4000);
    assert.match(res.text, /^HTTP\/1\.1 200[\s\S]*fine$/);
    assert.ok(res.closed, 'tandem closed the idle connection');
    assert.ok(Date.now() - started < 2500, `closed after ${Date.now() - started} ms (keepAlive 300ms; the default is 5s)`);
  });

  test('a backend that never completes the TCP handshake gives a 504 after the connect timeout', async () => {
    // A listener that never accepts, its one-slot queue filled: later SYNs are dropped,
    // as from a host that is up but overloaded or behind a black-holing firewall.
    const py = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)'], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [chunk] = await once(py.stdout!, 'data') as [Buffer];
      const port = Number(chunk.toString().trim());
      const fillers: Socket[] = [];
      for (let i = 0; i < 3; i++) fillers.push(connect(port, '127.0.0.1').on('error', () => {}));
      await new Promise((r) => setTimeout(r, 200));
      const t = await tandem(singlePool([{ name: 'hung', url: `http://127.0.0.1:${port}` }], { timeouts: { connect: '300ms' }, retries: 0 }));
      const started = Date.now();
      const r = await request(`${t.url}/`);
      const elapsed = Date.now() - started;
      assert.equal(r.statusCode, 504);
      assert.deepEqual(await r.body.json(), { error: 'TANDEM_ERR_CONNECT_TIMEOUT', message: 'timed out connecting to the backend', pool: 'web' });
      assert.ok(elapsed < 1500, `answered after ${elapsed} ms (connect timeout 300ms; the default is 2s)`);
      for (const f of fillers) f.destroy();
    } finally {
      py.kill('SIGKILL');
    }
  });

  test('a backend that stalls mid-body is cut after the idle timeout, and so is the client connection', async () => {
    const b = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': '1000' });
      res.write('x'.repeat(100));
    });
    const t = await tandem(singlePool([{ name: 'stalls', url: b.url }], { timeouts: { idle: '400ms' }, retries: 0 }));
    const started = Date.now();
    const res = await raw(t.url, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n', 5000);
    assert.match(res.text, /^HTTP\/1\.1 200/);
    assert.ok(res.text.endsWith('x'.repeat(100)), 'the part that arrived was passed on');
    assert.ok(res.closed, 'the client connection was closed, so the short body cannot pass as complete');
    assert.ok(Date.now() - started < 3000, `closed after ${Date.now() - started} ms`);
  });
});

describe('aborts', () => {
  test('a client abort mid-download closes the upstream connection within 100 ms', async () => {
    let upstreamClosedAt = 0;
    const b = await serve((req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(16384);
      const timer = setInterval(() => res.write(chunk), 5);
      req.socket.on('close', () => { clearInterval(timer); upstreamClosedAt = performance.now(); });
    });
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const socket = connect(Number(new URL(t.url).port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    await once(socket, 'data');
    await new Promise((r) => setTimeout(r, 100));
    const abortedAt = performance.now();
    socket.destroy();
    const deadline = Date.now() + 2000;
    while (upstreamClosedAt === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    assert.ok(upstreamClosedAt > 0, 'upstream connection closed');
    assert.ok(upstreamClosedAt - abortedAt < 100, `closed after ${(upstreamClosedAt - abortedAt).toFixed(1)} ms`);
    assert.equal(b.sockets.size, 0);
  });
});

describe('upgrades that go nowhere', () => {
  test('upgrade requests reset by the client right away, to no route and to an empty pool, crash nothing', async () => {
    const b = await serve((_req, res) => res.end('still here'));
    const t = await tandem(config({
      routes: [
        { name: 'empty', match: { pathPrefix: '/empty' }, pool: 'sick' },
        { name: 'api', match: { pathPrefix: '/api' }, pool: 'web' },
      ],
      pools: {
        web: { backends: [{ name: 'b', url: b.url }] },
        sick: { backends: [{ name: 'gone', url: 'http://127.0.0.1:1' }], healthCheck: { path: '/', interval: '1s', timeout: '500ms', startUnhealthy: true } },
      },
    }));
    const workers = t.workerPids();
    const port = Number(new URL(t.url).port);
    for (let i = 0; i < 40; i++) {
      const socket = connect(port, '127.0.0.1');
      await once(socket, 'connect');
      socket.write(`GET ${i % 2 ? '/nowhere' : '/empty'} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n`);
      socket.resetAndDestroy();
    }
    await new Promise((r) => setTimeout(r, 300));
    const r = await request(`${t.url}/api`);
    assert.equal(await r.body.text(), 'still here');
    assert.deepEqual(t.workerPids(), workers, 'no worker died');
  });
});
