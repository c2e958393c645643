// A backend that answers before it has read the request body (a 401 to an upload): the
// client gets the answer with Connection: close and the connection is closed, so its
// next pipelined request is sent again on a new connection instead of being lost on one
// that neither answers nor closes.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { exchange, RecordingBackend } from './support.ts';

let t: TandemProcess | null = null;
let backend: RecordingBackend | null = null;
after(async () => {
  await t?.stop();
  await backend?.close();
});

test('an early 401 to a 512 KiB upload is relayed with Connection: close and the connection closes at once', async () => {
  backend = await RecordingBackend.start();
  backend.server.removeAllListeners('request');
  backend.server.on('request', (req, res) => {
    if (req.url === '/upload') {
      res.writeHead(401, { connection: 'close', 'content-length': 4 });
      res.end('nope');
      return;
    }
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  t = await startTandem(singlePool([{ name: 'rec', url: backend.url }]));
  const address = [...t.listeners.values()][0];
  const body = Buffer.alloc(512 * 1024, 97);
  const t0 = performance.now();
  // The body arrives in parts, so the backend answers while most of it is still to come.
  const r = await exchange(address, [
    `POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n`,
    body.subarray(0, 1000), body.subarray(1000, 200_000), body.subarray(200_000),
    'GET /next HTTP/1.1\r\nHost: a\r\n\r\n',
  ], { gapMs: 300, waitMs: 10_000 });
  const ms = performance.now() - t0;
  assert.deepEqual(r.statuses, [401]);
  assert.match(r.text, /\r\nconnection: close\r\n/i, 'the client is told not to expect an answer on this connection');
  assert.ok(r.closed, 'the connection is closed');
  // Before: the answer said keep-alive and the connection idled until the keep-alive timeout.
  assert.ok(ms < 4000, `closed after ${ms.toFixed(0)} ms`);
  assert.ok(!backend.bytes().includes('GET /next'), 'the pipelined request was not sent on behind the unread body');
});

test('interim answers a backend sends unasked (100 Continue, 102 Processing) are skipped: the client gets the final answer, and the connection stays in step', async () => {
  const b = await RecordingBackend.start();
  b.handler = (req, res) => {
    res.writeContinue();
    res.writeProcessing();
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
    res.end('ok');
  };
  const proxy = await startTandem(singlePool([{ name: 'rec', url: b.url }]));
  try {
    const address = [...proxy.listeners.values()][0];
    const r = await exchange(address, 'GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n', {
      until: (text) => (text.match(/\r\n\r\nok/g) ?? []).length === 2,
    });
    assert.deepEqual(r.statuses, [200, 200], r.text);
    assert.equal(r.closed, false, 'the connection is kept alive');
    assert.deepEqual(b.requests.map((q) => q.url), ['/a', '/b']);
  } finally {
    await proxy.stop();
    await b.close();
  }
});
