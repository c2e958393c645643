// What a client connection's engine does itself, tested on the engine the run uses
// (fast by default; CI runs the suite again with TANDEM_ENGINE=node): 100-continue and
// other expectations, HTTP/1.0 framing and keep-alive, re-chunked and close-delimited
// bodies, pipelining, and upstream connection reuse. Both engines must answer alike.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';
import { config, singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const servers: Server[] = [];
const procs: TandemProcess[] = [];
const ENGINE = process.env.TANDEM_ENGINE === 'node' ? 'node' : 'fast';

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; connections: () => number }> {
  const server = createServer(handler);
  let connections = 0;
  server.on('connection', () => connections++);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => connections };
}

async function tandem(yaml: string): Promise<TandemProcess> {
  const t = await startTandem(yaml);
  procs.push(t);
  return t;
}

/** A raw client connection that collects what it reads. */
async function client(url: string): Promise<{ socket: Socket; text: () => string; until: (pattern: RegExp, ms?: number) => Promise<string> }> {
  const u = new URL(url);
  const socket = connect(Number(u.port), u.hostname);
  await once(socket, 'connect');
  let text = '';
  const waiters: (() => void)[] = [];
  socket.on('data', (d) => {
    text += d.toString('latin1');
    for (const w of waiters.splice(0)) w();
  });
  socket.on('close', () => { for (const w of waiters.splice(0)) w(); });
  const until = async (pattern: RegExp, ms = 10_000) => {
    const deadline = Date.now() + ms;
    while (!pattern.test(text)) {
      if (socket.destroyed || Date.now() > deadline) throw new Error(`no ${pattern} in ${JSON.stringify(text)}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 200);
      });
    }
    return text;
  };
  return { socket, text: () => text, until };
}

/** The data of a complete chunked body. */
function dechunk(body: string): string {
  let out = '';
  for (let at = 0; ;) {
    const eol = body.indexOf('\r\n', at);
    const size = parseInt(body.slice(at, eol), 16);
    if (size === 0) return out;
    out += body.slice(eol + 2, eol + 2 + size);
    at = eol + 2 + size + 2;
  }
}

function echo(req: IncomingMessage, res: ServerResponse): void {
  const parts: Buffer[] = [];
  req.on('data', (d: Buffer) => parts.push(d));
  req.on('end', () => {
    const body = Buffer.concat(parts);
    res.writeHead(200, { 'content-length': body.length, 'x-method': req.method ?? '' });
    res.end(body);
  });
}

/** A backend whose /stream answer has no Content-Length, in two parts; `close`: ended by closing, else chunked. */
function streaming(close: boolean): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    if (req.url !== '/stream') return echo(req, res);
    if (close) res.writeHead(200, { connection: 'close' });
    res.write('part one, ');
    setTimeout(() => res.end('part two'), 20);
  };
}

after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  for (const s of servers) s.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
});

describe(`client connections (${ENGINE} engine)`, () => {
  test('the engine serving each listener is logged: fast unless set to node', async () => {
    const b = await serve(echo);
    const t = await tandem(config({
      listeners: [{ name: 'web', address: '127.0.0.1:0' }, { name: 'old', address: '127.0.0.1:0', engine: 'node' }],
      routes: [{ name: 'all', pool: 'p' }],
      pools: { p: { backends: [{ name: 'b', url: b.url }] } },
    }));
    const line = await t.waitForLine((l) => l.event === 'serving', { from: 0 });
    assert.deepEqual(line.engines, { web: ENGINE, old: 'node' });
    for (const name of ['web', 'old']) {
      const c = await client(`http://${t.listeners.get(name)}`);
      c.socket.write('GET /x HTTP/1.1\r\nHost: a\r\n\r\n');
      assert.match(await c.until(/\r\n\r\n$/), /^HTTP\/1\.1 200 /);
      c.socket.destroy();
    }
  });

  test('Expect: 100-continue gets 100 before the body is sent; another expectation gets 417', async () => {
    const b = await serve(echo);
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const c = await client(t.url);
    c.socket.write('POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
    await c.until(/^HTTP\/1\.1 100 Continue\r\n\r\n/);
    c.socket.write('hello');
    const text = await c.until(/\r\n\r\nhello$/);
    assert.match(text, /HTTP\/1\.1 200 OK\r\n/);
    c.socket.write('POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: something-else\r\n\r\n');
    assert.match(await c.until(/HTTP\/1\.1 417 /), /HTTP\/1\.1 417 Expectation Failed\r\n/);
    c.socket.destroy();
  });

  test('HTTP/1.0: keep-alive only when asked, a body of unknown length ends with the connection', async () => {
    const b = await serve(streaming(false));
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const c = await client(t.url);
    c.socket.write('GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n');
    const first = await c.until(/\r\n\r\n$/);
    assert.match(first, /^HTTP\/1\.1 200 /);
    assert.match(first, /\r\nconnection: keep-alive\r\n/i);
    c.socket.write('GET /stream HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n');
    await once(c.socket, 'close');
    const second = c.text().slice(first.length);
    assert.doesNotMatch(second, /transfer-encoding/i, 'an HTTP/1.0 client is not sent chunks');
    assert.match(second, /\r\n\r\npart one, part two$/);
  });

  test('a body the backend ends by closing reaches an HTTP/1.1 client chunked, and the connection stays usable', async () => {
    const b = await serve(streaming(true));
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const c = await client(t.url);
    c.socket.write('GET /stream HTTP/1.1\r\nHost: a\r\n\r\n');
    const first = await c.until(/\r\n0\r\n\r\n$/);
    assert.match(first, /\r\ntransfer-encoding: chunked\r\n/i);
    assert.equal(dechunk(first.slice(first.indexOf('\r\n\r\n') + 4)), 'part one, part two');
    c.socket.write('GET /again HTTP/1.1\r\nHost: a\r\n\r\n');
    assert.match(await c.until(/HTTP\/1\.1 200 OK[\s\S]*x-method: GET/), /x-method: GET/);
    c.socket.destroy();
  });

  test('pipelined requests are answered in order, HEAD and 204 without a body', async () => {
    const b = await serve((req, res) => {
      if (req.url === '/empty') {
        res.writeHead(204);
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': req.url!.length });
      res.end(req.method === 'HEAD' ? undefined : req.url);
    });
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const c = await client(t.url);
    c.socket.write('GET /one HTTP/1.1\r\nHost: a\r\n\r\nHEAD /two HTTP/1.1\r\nHost: a\r\n\r\nGET /empty HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\n\r\n');
    const text = await c.until(/\/three$/);
    const statuses = [...text.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1]);
    assert.deepEqual(statuses, ['200', '200', '204', '200']);
    const bodies = text.split(/HTTP\/1\.1 \d+ [^\r]*\r\n/).slice(1).map((r) => r.slice(r.indexOf('\r\n\r\n') + 4));
    assert.deepEqual(bodies, ['/one', '', '', '/three']);
    c.socket.destroy();
  });

  test('upstream connections are kept alive: 100 requests in sequence use one backend connection or two', async () => {
    const b = await serve(echo);
    const t = await tandem(singlePool([{ name: 'b', url: b.url }]));
    const c = await client(t.url);
    for (let i = 0; i < 100; i++) {
      c.socket.write(`POST /n${i} HTTP/1.1\r\nHost: a\r\nContent-Length: ${String(i).length}\r\n\r\n${i}`);
      await c.until(new RegExp(`\\r\\n\\r\\n${i}$`));
    }
    c.socket.destroy();
    assert.ok(b.connections() <= 2, `${b.connections()} backend connections`);
  });

  test('a request head that arrives too slowly gets 408 within the headers timeout, and the connection closes', async () => {
    const b = await serve(echo);
    const t = await tandem(singlePool([{ name: 'b', url: b.url }], {}, {
      listeners: [{ name: 'web', address: '127.0.0.1:0', timeouts: { headers: '500ms', request: '1s' } }],
    }));
    const c = await client(t.url);
    c.socket.write('GET /slow HTTP/1.1\r\nHost: a\r\n');
    const started = Date.now();
    await once(c.socket, 'close');
    assert.match(c.text(), /^HTTP\/1\.1 408 /);
    // Under the request timeout plus a busy machine's timer slack: the head's own timeout fired.
    assert.ok(Date.now() - started < 5000, `closed after ${Date.now() - started} ms`);
  });
});
