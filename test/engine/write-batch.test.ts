// src/engine/write-batch.ts on real loopback sockets: writes corked for the turn go out
// once the turn's events are handled, in the order written, and a socket closed with
// destroySoon() (as front.ts closes idle connections) sends them before it closes.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { corkTurn } from '../../src/engine/write-batch.ts';

const servers: Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

/** A connected pair: `ours` (the server side, written to) and `peer` (reads everything into text()). */
async function pair(): Promise<{ ours: Socket; peer: Socket; text: () => string; ended: Promise<unknown> }> {
  const server = createServer();
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection');
  const peer = connect((server.address() as AddressInfo).port, '127.0.0.1');
  const connected = once(peer, 'connect');
  const [ours] = (await accepted) as [Socket];
  await connected;
  let text = '';
  peer.on('data', (d: Buffer) => { text += d.toString('latin1'); });
  return { ours, peer, text: () => text, ended: once(peer, 'end') };
}

test('writes corked for the turn are held until its events are handled, then sent in the order written', async () => {
  const { ours, peer, text } = await pair();
  corkTurn(ours);
  ours.write('HTTP/1.1 200 OK\r\n', 'latin1');
  corkTurn(ours);
  ours.write(Buffer.from('content-length: 2\r\n\r\nok'));
  assert.ok(ours.writableLength > 0, 'nothing went to the kernel during the turn');
  // The flush runs from a setImmediate queued before this one.
  await new Promise((r) => setImmediate(r));
  assert.equal(ours.writableLength, 0, 'flushed once the turn was over');
  assert.equal(ours.writableCorked, 0, 'one uncork per cork');
  const deadline = Date.now() + 10_000;
  while (text() !== 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok' && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  assert.equal(text(), 'HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
  peer.destroy();
  ours.destroy();
});

test('a socket closed with destroySoon() in the same turn sends what was corked first; destroy() would drop it', async () => {
  const kept = await pair();
  corkTurn(kept.ours);
  kept.ours.write('the whole answer', 'latin1');
  kept.ours.destroySoon();
  await kept.ended;
  assert.equal(kept.text(), 'the whole answer');

  // What closeIdle did before: the corked answer never leaves.
  const lost = await pair();
  corkTurn(lost.ours);
  lost.ours.write('the whole answer', 'latin1');
  lost.ours.destroy();
  await once(lost.peer, 'close');
  assert.equal(lost.text(), '');
});
