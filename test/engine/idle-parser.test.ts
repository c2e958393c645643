// A client connection of the fast engine that waits idle between requests gives its llhttp
// parser back (front.ts, after 1 s, from the sweep) and takes one again when its next
// bytes arrive. The connection must go on as if nothing happened: a request split over
// two reads, a body, a pipelined pair answered in order, a malformed request refused with
// its 400, a WebSocket upgrade with a frame behind its head. A real tandem on port 0 before
// a real backend; each step waits until the admin API counts the connection as parked again.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { once } from 'node:events';
import { WebSocketServer } from 'ws';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { parse, total } from '../helpers/prom.ts';

const servers: Server[] = [];
const procs: TandemProcess[] = [];
after(async () => {
  for (const p of procs) await p.stop();
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

/** A backend that answers each request with its method, path and body, and echoes WebSocket messages. */
async function echoBackend(): Promise<string> {
  const server = createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const body = `${req.method} ${req.url} ${Buffer.concat(parts).toString()}`;
      res.writeHead(200, { 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  new WebSocketServer({ server }).on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A raw client connection; until() resolves when what it read matches, or fails at the deadline. */
async function client(url: string): Promise<{ socket: Socket; text: () => string; until: (pattern: RegExp) => Promise<void>; closed: Promise<void> }> {
  const u = new URL(url);
  const socket = connect(Number(u.port), u.hostname);
  await once(socket, 'connect');
  let text = '';
  let wake: (() => void) | null = null;
  socket.on('data', (d: Buffer) => {
    text += d.toString('latin1');
    wake?.();
  });
  const closed = once(socket, 'close').then(() => { wake?.(); });
  const until = async (pattern: RegExp) => {
    const deadline = Date.now() + 10_000;
    while (!pattern.test(text)) {
      if (socket.destroyed || Date.now() > deadline) throw new Error(`no ${pattern} in ${JSON.stringify(text)}`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 200);
      });
    }
  };
  return { socket, text: () => text, until, closed };
}

/** Waits until tandem has counted `n` parked connections (the sweep parks, the worker reports its counts each second). */
async function parkedAtLeast(admin: string, n: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const parked = total(parse(await (await fetch(`${admin}/metrics`)).text()), 'tandem_listener_parked_connections_total', { listener: 'web' });
    if (parked >= n) return;
    if (Date.now() > deadline) throw new Error(`${parked} parked connections counted, waited for ${n}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** tandem (engine: fast) before an echo backend, and a client connection that was answered once and is now parked. */
async function parkedClient(): Promise<{ admin: string; c: Awaited<ReturnType<typeof client>> }> {
  const backend = await echoBackend();
  const t = await startTandem(singlePool([{ name: 'echo', url: backend }], {}, {
    listeners: [{ name: 'web', address: '127.0.0.1:0', engine: 'fast' }],
  }));
  procs.push(t);
  const c = await client(t.url);
  c.socket.write('GET /first HTTP/1.1\r\nHost: a\r\n\r\n');
  await c.until(/GET \/first $/);
  await parkedAtLeast(t.admin!, 1);
  return { admin: t.admin!, c };
}

test('a connection idle long enough to give its parser back serves what it sends next: split heads, bodies, pipelined pairs, and a 400 for a malformed request', async () => {
  const { admin, c } = await parkedClient();

  // The first bytes after parking are half a head: the parser taken for them must carry on with the rest.
  c.socket.write('POST /second HTTP/1.1\r\nHo');
  await new Promise((r) => setTimeout(r, 50));
  c.socket.write('st: a\r\nContent-Length: 5\r\n\r\nhello');
  await c.until(/POST \/second hello$/);
  await parkedAtLeast(admin, 2);

  c.socket.write('GET /third HTTP/1.1\r\nHost: a\r\n\r\nGET /fourth HTTP/1.1\r\nHost: a\r\n\r\n');
  await c.until(/GET \/fourth $/);
  const text = c.text();
  assert.ok(text.indexOf('GET /third ') < text.indexOf('GET /fourth '), 'pipelined answers in order');
  assert.equal(text.match(/HTTP\/1\.1 200 /g)?.length, 4);
  await parkedAtLeast(admin, 3);

  c.socket.write('GET /fifth HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n');
  await c.until(/HTTP\/1\.1 400 /);
  await c.closed;
  assert.equal(c.text().match(/HTTP\/1\.1 200 /g)?.length, 4, 'nothing of the malformed request was served');
});

test('a parked connection whose client shuts its side is closed', async () => {
  const { c } = await parkedClient();
  c.socket.end();
  await c.closed;
  assert.equal(c.text().match(/HTTP\/1\.1 200 /g)?.length, 1);
});

test('a parked connection that asks for a WebSocket upgrade is handed over with the frame sent behind its head', async () => {
  const { c } = await parkedClient();
  // One write: the upgrade head and a masked text frame "hi", which belongs to the new protocol.
  const mask = Buffer.from([1, 2, 3, 4]);
  const frame = Buffer.concat([Buffer.from([0x81, 0x82]), mask, Buffer.from('hi').map((b, i) => b ^ mask[i % 4])]);
  c.socket.write(Buffer.concat([Buffer.from('GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
    + 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n', 'latin1'), frame]));
  await c.until(/HTTP\/1\.1 101 [^]*\r\n\r\n\x81\x02hi$/);
});

test('with more than 1,024 parsers held, connections give theirs back once idle for 100 ms, and serve what they send next', async () => {
  const backend = await echoBackend();
  const t = await startTandem(singlePool([{ name: 'echo', url: backend }], {}, {
    listeners: [{ name: 'web', address: '127.0.0.1:0', engine: 'fast' }],
  }));
  procs.push(t);
  const u = new URL(t.url);
  const N = 1100;
  // Opened 100 at a time, each answered once: more connections hold parsers than the engine keeps.
  const conns: Socket[] = [];
  const answered = (s: Socket, pattern: RegExp) => new Promise<string>((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in ${JSON.stringify(text)}`)), 60_000);
    const onData = (d: Buffer) => {
      text += d.toString('latin1');
      if (!pattern.test(text)) return;
      clearTimeout(timer);
      s.removeListener('data', onData);
      resolve(text);
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error(`closed after ${JSON.stringify(text)}`)));
  });
  try {
    for (let i = 0; i < N; i += 100) {
      await Promise.all(Array.from({ length: 100 }, async (_, j) => {
        const s = connect(Number(u.port), u.hostname);
        conns.push(s);
        await once(s, 'connect');
        const done = answered(s, /GET \/first\/\d+ $/);
        s.write(`GET /first/${i + j} HTTP/1.1\r\nHost: a\r\n\r\n`);
        await done;
      }));
    }
    // Every connection at once: a head split over two writes, then a pipelined pair.
    await Promise.all(conns.map(async (s, i) => {
      const done = answered(s, /GET \/fourth $/);
      s.write(`POST /second/${i} HTTP/1.1\r\nHo`);
      await new Promise((r) => setTimeout(r, 20));
      s.write('st: a\r\nContent-Length: 2\r\n\r\nok');
      s.write('GET /third HTTP/1.1\r\nHost: a\r\n\r\nGET /fourth HTTP/1.1\r\nHost: a\r\n\r\n');
      const text = await done;
      assert.match(text, new RegExp(`^HTTP/1\\.1 200 [^]*POST /second/${i} ok[^]*GET /third [^]*GET /fourth $`));
    }));
    await parkedAtLeast(t.admin!, N - 1024);
  } finally {
    for (const s of conns) s.destroy();
  }
});
