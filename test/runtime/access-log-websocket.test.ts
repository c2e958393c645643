import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket, { WebSocketServer } from 'ws';
import { readLog, waitForLine } from '../helpers/access-log.ts';
import { config } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

// WebSocket upgrades in the access log: one line when the session ends, with its
// duration and the bytes each way; a refused upgrade is logged with the status and the
// body the client got.

let backend: Server;
let upgrades: IncomingHttpHeaders[] = [];
let t: TandemProcess;
let file: string;

before(async () => {
  backend = createServer();
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
  backend.on('upgrade', (req, socket: Socket, head) => {
    upgrades.push(req.headers);
    if (req.url?.startsWith('/ws/plain')) {
      socket.end('HTTP/1.1 426 Upgrade Required\r\ncontent-type: text/plain\r\ncontent-length: 18\r\nconnection: close\r\n\r\nno websockets here');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  file = join(mkdtempSync(join(tmpdir(), 'tandem-access-ws-')), 'access.log');
  t = await startTandem(config({
    accessLog: { path: file },
    routes: [
      { name: 'ws', match: { pathPrefix: '/ws' }, pool: 'ws' },
      // Port 1 on loopback: refused at once.
      { name: 'down', match: { pathPrefix: '/down' }, pool: 'down' },
    ],
    pools: { ws: { backends: [{ name: 'ws1', url }] }, down: { backends: [{ name: 'gone', url: 'http://127.0.0.1:1' }] } },
  }));
});

after(async () => {
  await t?.stop();
  backend?.closeAllConnections();
  backend?.close();
});

test('a WebSocket session is logged when it ends: 101, its duration, the bytes each way, its request id and trace', async () => {
  upgrades = [];
  const trace = '0af7651916cd43dd8448eb211c80319c';
  const ws = new WebSocket(`ws://${t.listeners.get('web')}/ws/chat?room=1`, {
    headers: { 'x-request-id': 'ws-session-1', traceparent: `00-${trace}-b7ad6b7169203331-01` },
  });
  const [, answer] = await Promise.all([once(ws, 'open'), once(ws, 'upgrade')]);
  assert.equal((answer[0] as { headers: IncomingHttpHeaders }).headers['x-request-id'], 'ws-session-1', 'the 101 carries the id');
  const opened = Date.now();
  const replies: string[] = [];
  ws.on('message', (d) => replies.push(d.toString()));
  for (const m of ['one', 'two', 'three']) ws.send(m);
  while (replies.length < 3) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(readLog(file).filter((l) => l.path === '/ws/chat').length, 0, 'no line while the session lasts');
  ws.close(1000);
  await once(ws, 'close');
  const lasted = Date.now() - opened;

  const l = await waitForLine(file, (x) => x.path === '/ws/chat');
  assert.equal(l.status, 101);
  assert.equal(l.upgrade, 'websocket');
  assert.equal(l.method, 'GET');
  assert.equal(l.pool, 'ws');
  assert.equal(l.backend, 'ws1');
  assert.equal(l.error, null);
  assert.ok(l.duration >= 300 && l.duration < lasted + 5000, `duration ${l.duration} ms, the session lasted ${lasted} ms`);
  // Frames after the handshake. Client to backend, masked (2 + 4 bytes of header):
  // "one", "two", "three" and a close frame with its code: 9 + 9 + 11 + 8. Backend to
  // client, unmasked: 5 + 5 + 7, and the close frame back: 4.
  assert.equal(l.received, 37, 'bytes from the client');
  assert.equal(l.bytes, 21, 'bytes to the client');
  assert.equal(l.requestId, 'ws-session-1');
  assert.equal(l.traceId, trace);
  assert.equal(upgrades[0]['x-request-id'], 'ws-session-1', 'the backend got the id');
  assert.equal(upgrades[0].traceparent, `00-${trace}-b7ad6b7169203331-01`);
});

test('a WebSocket session without an id gets one, upstream and in its 101', async () => {
  upgrades = [];
  const ws = new WebSocket(`ws://${t.listeners.get('web')}/ws/anonymous`, { headers: { traceparent: 'not-a-trace' } });
  const [, answer] = await Promise.all([once(ws, 'open'), once(ws, 'upgrade')]);
  const id = (answer[0] as { headers: IncomingHttpHeaders }).headers['x-request-id'];
  ws.close();
  await once(ws, 'close');
  const l = await waitForLine(file, (x) => x.path === '/ws/anonymous');
  assert.match(String(id), /^[0-9a-f-]{36}$/);
  assert.equal(l.requestId, id);
  assert.equal(upgrades[0]['x-request-id'], id);
  assert.equal(upgrades[0].traceparent, undefined, 'an invalid traceparent is not passed on');
  assert.equal(l.traceId, null);
});

/** An upgrade request for `path` on a raw connection; the whole answer, once tandem closes. */
async function upgrade(path: string): Promise<string> {
  const [host, port] = t.listeners.get('web')!.split(':');
  const socket = connect(Number(port), host);
  await once(socket, 'connect');
  socket.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
  let text = '';
  socket.on('data', (d: Buffer) => { text += d.toString(); });
  await once(socket, 'close');
  return text;
}

test('a refused upgrade is logged with the status and the body the client got', async () => {
  const cases: [string, number, string | null][] = [
    ['/ws/plain', 426, null], // the backend answered with a plain response
    ['/down/ws', 502, 'TANDEM_ERR_UPGRADE_FAILED'], // the backend could not be reached
    ['/nowhere', 404, 'TANDEM_ERR_NO_ROUTE'], // no route
  ];
  for (const [path, status, error] of cases) {
    const text = await upgrade(path);
    assert.match(text, new RegExp(`^HTTP/1\\.1 ${status} `), path);
    const l = await waitForLine(file, (x) => x.path === path);
    assert.equal(l.status, status, path);
    assert.equal(l.upgrade, 'websocket', path);
    assert.equal(l.error, error, path);
    const head = text.slice(0, text.indexOf('\r\n\r\n'));
    let body = text.slice(head.length + 4);
    if (/\r\ntransfer-encoding: chunked/i.test(head)) body = body.replace(/^[0-9a-f]+\r\n|\r\n[0-9a-f]+\r\n|\r\n0\r\n\r\n$/gi, '');
    assert.ok(body.length > 0, path);
    assert.equal(l.bytes, Buffer.byteLength(body), `${path}: bytes is the body the client got`);
    assert.ok(head.toLowerCase().includes(`\r\nx-request-id: ${l.requestId.toLowerCase()}`), `${path}: the answer carries the id`);
  }
});
