// Upstream connections skip the `100 Continue` answers a backend sends unasked
// (src/pool/interim.ts), and nothing else: an undici pool with the filtering connector
// against a raw TCP backend that writes exact bytes, split where the test says.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { skippingContinue } from '../../src/pool/interim.ts';
import { buildConnector, Pool } from 'undici';

const servers: Server[] = [];
const pools: Pool[] = [];
after(async () => {
  await Promise.all(pools.map((p) => p.destroy()));
  for (const s of servers) s.close();
});

/** A backend that answers each request it reads with `parts`, written 30 ms apart. */
async function rawBackend(parts: readonly string[]): Promise<string> {
  const server = createServer((socket: Socket) => {
    socket.on('data', async (d: Buffer) => {
      if (!d.toString('latin1').includes('\r\n\r\n')) return;
      for (const [i, part] of parts.entries()) {
        if (i > 0) await sleep(30);
        socket.write(part);
      }
    });
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function pool(origin: string, filtered: boolean): Pool {
  const connect = buildConnector({ timeout: 2000, allowH2: false });
  const p = new Pool(origin, { connections: 1, pipelining: 1, connect: filtered ? skippingContinue(connect) : connect });
  pools.push(p);
  return p;
}

async function get(p: Pool): Promise<{ status: number; body: string }> {
  const r = await p.request({ path: '/', method: 'GET' });
  return { status: r.statusCode, body: await r.body.text() };
}

test('a 100 head split over three reads, with a header, is skipped; the connection answers its next request too', async () => {
  const origin = await rawBackend(['HTTP/1.1 10', '0 Continue\r\nX-Note: unasked\r\n', '\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok']);
  const p = pool(origin, true);
  assert.deepEqual(await get(p), { status: 200, body: 'ok' });
  assert.deepEqual(await get(p), { status: 200, body: 'ok' });
  // Without the filter undici takes the 100 for a broken connection.
  await assert.rejects(get(pool(origin, false)), /bad response|other side closed|socket/i);
});

test('two 100 heads and a 102 before the answer, all in one read', async () => {
  const origin = await rawBackend(['HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok']);
  assert.deepEqual(await get(pool(origin, true)), { status: 200, body: 'ok' });
});

test('a body whose later read starts like a 100 head is passed on whole', async () => {
  const body = 'xxHTTP/1.1 100 Continue\r\n\r\nyy';
  const origin = await rawBackend([`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\n\r\nxx`, 'HTTP/1.1 100 Continue\r\n\r\nyy']);
  assert.deepEqual(await get(pool(origin, true)), { status: 200, body });
});

test('a status that only starts like 100 (1000) is not taken for one', async () => {
  const origin = await rawBackend(['HTTP/1.1 1000 Odd\r\n\r\n']);
  await assert.rejects(get(pool(origin, true)), /Invalid response status/);
});

test('a 100 head that never ends is not held past 16 KiB: undici gets the bytes and refuses them', async () => {
  const origin = await rawBackend(['HTTP/1.1 100 Continue\r\nX-Pad: ' + 'a'.repeat(20_000)]);
  await assert.rejects(get(pool(origin, true)), /Header|header|overflow/);
});
