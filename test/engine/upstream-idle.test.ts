// An idle keep-alive connection of FastUpstream gives its llhttp parser back after 1 s
// (from the upstream's idle sweep) and takes one again for its next exchange. A real
// backend; the connector keeps each socket it makes, so the test can wait until the
// connection is parked and count the connections made.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import { once } from 'node:events';
import type { FastUpstream, UpstreamConnection } from '../../src/engine/upstream.ts';
import { getThrough, tcpUpstream } from '../helpers/fast-upstream.ts';
import { TestCa } from '../helpers/certs.ts';

const opened: { server: Server; upstream: FastUpstream }[] = [];
after(async () => {
  for (const { server, upstream } of opened) {
    await upstream.destroy();
    server.closeAllConnections();
    server.close();
  }
});

/** Waits until the connection on `socket` has given its parser back (the sweep runs each second). */
async function parked(socket: Socket): Promise<void> {
  const deadline = Date.now() + 10_000;
  const conn = () => (socket as Socket & { owner: UpstreamConnection }).owner;
  while (conn().parser !== null) {
    if (Date.now() > deadline) throw new Error('the idle connection kept its parser');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * A backend that answers with its path (`backendSide` holds its end of each connection),
 * a FastUpstream to it (`sockets`: every connection it made), and one exchange done,
 * after which its connection was parked.
 */
async function parkedUpstream(tls = false): Promise<{ upstream: FastUpstream; sockets: Socket[]; backendSide: Socket[] }> {
  const backendSide: Socket[] = [];
  const answer = (req: { url?: string }, res: { end: (s: string) => void }) => res.end(`answer ${req.url}`);
  let server: Server;
  if (tls) {
    const files = new TestCa().issue('127.0.0.1', ['IP:127.0.0.1']);
    server = createHttpsServer({ cert: readFileSync(files.cert), key: readFileSync(files.key) }, answer);
  } else {
    server = createServer(answer);
  }
  server.on('connection', (s: Socket) => backendSide.push(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sockets: Socket[] = [];
  const upstream = tcpUpstream((server.address() as AddressInfo).port, { sockets, keepAliveTimeout: 60_000, tls });
  opened.push({ server, upstream });
  assert.equal(await getThrough(upstream, '/one'), '200 answer /one');
  await parked(sockets[0]);
  return { upstream, sockets, backendSide };
}

test('an idle upstream connection gives its parser back and serves the next exchange on the same connection', async () => {
  const { upstream, sockets, backendSide } = await parkedUpstream();
  assert.equal(await getThrough(upstream, '/two'), '200 answer /two');
  assert.equal(await getThrough(upstream, '/three'), '200 answer /three');
  assert.equal(backendSide.length, 1);
  assert.equal(sockets.length, 1);
});

test('a parked upstream connection that the backend closes, or writes to, is not used again', async () => {
  const { upstream, sockets, backendSide } = await parkedUpstream();
  backendSide[0].end();
  await once(sockets[0], 'close');
  assert.equal(await getThrough(upstream, '/two'), '200 answer /two');
  assert.equal(sockets.length, 2);

  await parked(sockets[1]);
  // Bytes that answer no request: the connection is closed, and the next exchange gets a new one.
  backendSide[1].write('HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n');
  await once(sockets[1], 'close');
  assert.equal(await getThrough(upstream, '/three'), '200 answer /three');
  assert.equal(sockets.length, 3);
});

test('an idle TLS upstream connection, whose parser is fed by hand, gives it back and serves the next exchange', async () => {
  const { upstream, sockets } = await parkedUpstream(true);
  assert.equal(await getThrough(upstream, '/two'), '200 answer /two');
  assert.equal(await getThrough(upstream, '/three'), '200 answer /three');
  assert.equal(sockets.length, 1);
});
