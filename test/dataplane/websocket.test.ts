import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { connect, type AddressInfo, type Socket } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const servers: Server[] = [];
const procs: TandemProcess[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop()));
  for (const s of servers) { s.closeAllConnections(); s.close(); }
});

const UPGRADE_HEAD = 'GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';

/** A raw connection to tandem's `web` listener; text() is everything read so far. */
async function rawClient(t: TandemProcess): Promise<{ socket: Socket; text: () => string }> {
  const [host, port] = t.listeners.get('web')!.split(':');
  const socket = connect(Number(port), host);
  await once(socket, 'connect');
  let text = '';
  socket.on('data', (d: Buffer) => { text += d.toString('latin1'); });
  return { socket, text: () => text };
}

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test('a WebSocket echo session works through tandem', async () => {
  const server = createServer();
  const wss = new WebSocketServer({ server });
  let forwardedFor: string | undefined;
  wss.on('connection', (ws, req) => {
    forwardedFor = req.headers['x-forwarded-for'] as string;
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  const addr = await listen(server);
  const t = await startTandem(singlePool([{ name: 'ws', url: `http://${addr}` }]));
  procs.push(t);
  const ws = new WebSocket(`ws://${t.listeners.get('web')}/chat`);
  await once(ws, 'open');
  const replies: string[] = [];
  ws.on('message', (d) => replies.push(d.toString()));
  for (const m of ['one', 'two', 'three']) ws.send(m);
  const deadline = Date.now() + 2000;
  while (replies.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(replies, ['one', 'two', 'three']);
  assert.equal(forwardedFor, '127.0.0.1');
  ws.close();
  await once(ws, 'close');
  wss.close();
});

test('an upgrade answered with a plain response passes it back and leaves no socket open', async () => {
  const backendSockets = new Set<Socket>();
  const server = createServer((_req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain' });
    res.end('no websockets here');
  });
  server.on('connection', (s) => { backendSockets.add(s); s.on('close', () => backendSockets.delete(s)); });
  const addr = await listen(server);
  const t = await startTandem(singlePool([{ name: 'plain', url: `http://${addr}` }]));
  procs.push(t);
  const { socket, text } = await rawClient(t);
  socket.write(UPGRADE_HEAD);
  await once(socket, 'close');
  assert.match(text(), /^HTTP\/1\.1 426/);
  assert.match(text(), /no websockets here/);
  const deadline = Date.now() + 2000;
  while (backendSockets.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(backendSockets.size, 0, 'the backend connection was closed too');
});

test('an upgrade pipelined behind a slow request is switched only after that request is answered', async () => {
  const server = createServer((req, res) => {
    // The plain request is answered late: the upgrade behind it must wait for it.
    setTimeout(() => {
      res.writeHead(200, { 'content-length': 4 });
      res.end('slow');
    }, 300);
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (data) => ws.send(`echo ${data}`)));
  const addr = await listen(server);
  const t = await startTandem(singlePool([{ name: 'ws', url: `http://${addr}` }]));
  procs.push(t);
  const { socket, text } = await rawClient(t);
  socket.write(`GET /slow HTTP/1.1\r\nHost: x\r\n\r\n${UPGRADE_HEAD}`);
  const deadline = Date.now() + 10_000;
  while (!/HTTP\/1\.1 101 [^]*\r\n\r\n/.test(text()) && !socket.destroyed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.match(text(), /^HTTP\/1\.1 200 [^]*slow(HTTP\/1\.1 101 )/, `the answers in the order asked: ${JSON.stringify(text())}`);
  socket.destroy();
  wss.close();
});
