// FastUpstream's close(), as undici's Pool's: exchanges already dispatched finish, and
// close() resolves when they have. A real backend; the connector is the real one, held
// back until close() was called, which is where a reload that drops a backend meets a
// connection still being made.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { once } from 'node:events';
import { getThrough, tcpUpstream } from '../helpers/fast-upstream.ts';

const servers: Server[] = [];
after(() => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
});

test('an exchange whose connection is made after close() is still answered, and close() resolves', async () => {
  const server = createServer((_req, res) => res.end('answered'));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  servers.push(server);
  const port = (server.address() as AddressInfo).port;
  let release: () => void = () => {};
  const held = new Promise<void>((r) => { release = r; });
  const upstream = tcpUpstream(port, { held });
  const outcome = getThrough(upstream, '/');
  const closed = upstream.close();
  release();
  const limit = (ms: number) => new Promise<string>((r) => setTimeout(() => r('no answer'), ms).unref());
  assert.equal(await Promise.race([outcome, limit(5000)]), '200 answered');
  assert.equal(await Promise.race([closed.then(() => 'closed'), limit(5000)]), 'closed');
});
