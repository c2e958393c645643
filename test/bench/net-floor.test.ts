// The node:net + llhttp floor (bench/targets/net-floor.ts) as the benchmark starts it: a
// process of its own in front of a real node:http origin. Its figures only mean something
// if it is a correct proxy, so this checks the HTTP/1.1 it claims: keep-alive both ways,
// bodies in both framings, large responses, pipelining, and origins that close.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { spawnService, type Service } from '../../bench/targets/process.ts';

const SCRIPT = join(import.meta.dirname, '../../bench/targets/net-floor.ts');
const MIB = 1024 * 1024;
const BIG = randomBytes(MIB);

interface Seen {
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
}

let origin: Server;
let floor: Service;
let base: string;
let originConnections = 0;
const seen: Seen[] = [];

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  seen.push({ url: req.url ?? '', headers: req.headers });
  if (req.url === '/echo') {
    // No Content-Length: node answers chunked, so the response side re-chunks too.
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    req.pipe(res);
  } else if (req.url === '/big') {
    res.writeHead(200, { 'content-length': String(BIG.length) });
    for (let off = 0; off < BIG.length; off += 64 * 1024) res.write(BIG.subarray(off, off + 64 * 1024));
    res.end();
  } else if (req.url === '/close') {
    res.writeHead(200, { connection: 'close', 'content-length': '6' });
    res.end('closed');
  } else if (req.url?.startsWith('/slow')) {
    // The first of a pipelined batch answers last at the origin; the client must still get it first.
    setTimeout(() => res.end(`answer ${req.url}`), 100);
  } else {
    req.resume();
    res.end(`answer ${req.url}`);
  }
}

before(async () => {
  origin = createServer({ keepAliveTimeout: 60_000 }, onRequest);
  origin.on('connection', () => originConnections++);
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
  floor = await spawnService([SCRIPT, `http://127.0.0.1:${(origin.address() as AddressInfo).port}`]);
  base = `http://127.0.0.1:${floor.info.port as number}`;
});

after(async () => {
  await floor?.stop();
  origin?.closeAllConnections();
  await new Promise<void>((resolve) => origin.close(() => resolve()));
});

test('many GETs on one client connection reuse one origin connection and carry X-Forwarded-For', { timeout: 10_000 }, async () => {
  const agent = new Agent({ connections: 1 });
  const connectionsBefore = originConnections;
  const from = seen.length;
  try {
    for (let i = 0; i < 200; i++) {
      const res = await request(`${base}/n${i}`, { dispatcher: agent });
      assert.equal(res.statusCode, 200);
      assert.equal(await res.body.text(), `answer /n${i}`);
    }
  } finally {
    await agent.close();
  }
  assert.equal(originConnections - connectionsBefore, 1);
  const mine = seen.slice(from);
  assert.equal(mine.length, 200);
  for (const s of mine) {
    assert.equal(s.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(s.headers.connection, undefined);
  }
});

test('a POST with a Content-Length body comes back intact', { timeout: 10_000 }, async () => {
  const body = randomBytes(256 * 1024);
  const from = seen.length;
  const res = await request(`${base}/echo`, { method: 'POST', body });
  assert.equal(res.statusCode, 200);
  assert.deepEqual(Buffer.from(await res.body.arrayBuffer()), body);
  assert.equal(seen[from].headers['content-length'], String(body.length));
});

test('a POST with a chunked body comes back intact', { timeout: 10_000 }, async () => {
  const parts = [randomBytes(1), randomBytes(70_000), randomBytes(3), randomBytes(200_000)];
  const from = seen.length;
  const res = await request(`${base}/echo`, { method: 'POST', body: Readable.from(parts) });
  assert.equal(res.statusCode, 200);
  assert.deepEqual(Buffer.from(await res.body.arrayBuffer()), Buffer.concat(parts));
  assert.equal(seen[from].headers['transfer-encoding'], 'chunked');
});

test('a 1 MiB response is streamed through byte for byte', { timeout: 10_000 }, async () => {
  const res = await request(`${base}/big`);
  assert.equal(res.statusCode, 200);
  assert.equal(res.headers['content-length'], String(MIB));
  assert.deepEqual(Buffer.from(await res.body.arrayBuffer()), BIG);
});

test('pipelined requests are answered in the order they were sent', { timeout: 10_000 }, async () => {
  const socket = connect(Number(new URL(base).port), '127.0.0.1');
  let out = '';
  socket.setEncoding('latin1');
  socket.on('data', (d: string) => { out += d; });
  const ended = new Promise<void>((resolve, reject) => {
    socket.once('end', resolve);
    socket.once('error', reject);
  });
  socket.write('GET /slow1 HTTP/1.1\r\nHost: x\r\n\r\n'
    + 'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello'
    + 'GET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await ended;
  socket.destroy();
  const answers = out.split('HTTP/1.1 200 OK\r\n');
  assert.equal(answers.length, 4, out);
  assert.match(answers[1], /\r\n\r\nanswer \/slow1$/);
  assert.match(answers[2], /\r\n\r\n5\r\nhello\r\n0\r\n\r\n$/);
  assert.match(answers[3], /\r\nConnection: close\r\n\r\nanswer \/p3$/);
});

test('after the origin closes its connection, the next request still gets through', { timeout: 10_000 }, async () => {
  const agent = new Agent({ connections: 1 });
  try {
    const closed = await request(`${base}/close`, { dispatcher: agent });
    assert.equal(closed.statusCode, 200);
    assert.equal(await closed.body.text(), 'closed');
    const next = await request(`${base}/after-close`, { dispatcher: agent });
    assert.equal(await next.body.text(), 'answer /after-close');
    // The origin drops every idle kept-alive connection: the floor's pool must notice, or retry.
    origin.closeIdleConnections();
    for (let i = 0; i < 5; i++) {
      const res = await request(`${base}/after-idle-close${i}`, { dispatcher: agent });
      assert.equal(res.statusCode, 200);
      assert.equal(await res.body.text(), `answer /after-idle-close${i}`);
    }
  } finally {
    await agent.close();
  }
});

test('the script prints its port and nothing else: no deprecation warning from the parser binding', () => {
  assert.equal(floor.output().trim(), JSON.stringify({ port: floor.info.port }));
});
