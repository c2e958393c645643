// Clients that do not read: one that pipelines thousands of requests and never reads
// must cost the backends one exchange, not all their connections; one that stops
// reading a large response is cut after the send timeout, and its backend connection
// freed. Also the listener's connection limit.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { request } from 'undici';
import { config } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { RecordingBackend, splitAddress } from './support.ts';

const BIG = 64 * 1024;
let backend: RecordingBackend;
let t: TandemProcess;
let address: string;
const open: Socket[] = [];
/** Requests the backend is answering right now, and the most at once, per path prefix. */
const inFlight = new Map<string, number>();
const peak = new Map<string, number>();
/** Backend responses to /huge that closed before they were finished (tandem freed the connection). */
let hugeCut = 0;

before(async () => {
  backend = await RecordingBackend.start();
  backend.handler = (req, res) => {
    const kind = (req.url ?? '').split('/')[1];
    inFlight.set(kind, (inFlight.get(kind) ?? 0) + 1);
    peak.set(kind, Math.max(peak.get(kind) ?? 0, inFlight.get(kind)!));
    res.on('close', () => {
      inFlight.set(kind, inFlight.get(kind)! - 1);
      if (kind === 'huge' && !res.writableFinished) hugeCut++;
    });
    if (kind === 'huge') {
      // 256 MiB, written as the client takes it: far more than any socket buffers hold.
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 256 * 1024 * 1024 });
      const chunk = Buffer.alloc(BIG, 120);
      let left = 4096;
      const pump = () => {
        while (left > 0) {
          left--;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
      return;
    }
    const body = kind === 'big' ? Buffer.alloc(BIG, 97) : Buffer.from('ok');
    const answer = () => {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length });
      res.end(body);
    };
    // The pipelined requests take a moment each, so requests dispatched together overlap.
    if (kind === 'big') setTimeout(answer, 20);
    else answer();
  };
  t = await startTandem(config({
    listeners: [{ name: 'web', address: '127.0.0.1:0', timeouts: { send: '1s' }, maxConnections: 40 }],
    routes: [{ name: 'all', pool: 'web' }],
    pools: { web: { backends: [{ name: 'rec', url: backend.url, maxConnections: 16 }], queue: { timeout: '20s' } } },
    admin: { address: '127.0.0.1:0' },
  }));
  address = [...t.listeners.values()][0];
});

after(async () => {
  for (const s of open) s.destroy();
  await t?.stop();
  await backend?.close();
});

async function dial(): Promise<Socket> {
  const [host, port] = splitAddress(address);
  const s = connect(port, host);
  s.on('error', () => {});
  open.push(s);
  await once(s, 'connect');
  return s;
}

test('a client that pipelines 2,000 requests and never reads holds one backend exchange; others are served', async () => {
  const attacker = await dial();
  attacker.pause();
  attacker.write('GET /big/x HTTP/1.1\r\nHost: a\r\n\r\n'.repeat(2000));
  // Give the attack time to take whatever it can.
  const start = Date.now();
  while (Date.now() - start < 1500) await new Promise((r) => setTimeout(r, 100));
  const url = `http://${address}`;
  const times: number[] = [];
  for (let i = 0; i < 8; i++) {
    const t0 = performance.now();
    const r = await request(`${url}/small/${i}`, { headersTimeout: 5000, bodyTimeout: 5000 });
    assert.equal(r.statusCode, 200);
    assert.equal(await r.body.text(), 'ok');
    times.push(performance.now() - t0);
  }
  assert.equal(peak.get('big'), 1, 'the pipelining client never had more than one request at the backend');
  const reached = backend.requests.filter((q) => q.url.startsWith('/big/')).length;
  assert.ok(reached < 200, `only what the socket buffers took reached the backend (${reached} of 2000)`);
  assert.ok(Math.max(...times) < 5000, `every other request was answered (slowest ${Math.max(...times).toFixed(0)} ms)`);
  attacker.destroy();
});

test('a client that stops reading a large response is cut after the send timeout, freeing the backend connection', async () => {
  const slow = await dial();
  slow.pause();
  slow.write('GET /huge/x HTTP/1.1\r\nHost: a\r\n\r\n');
  const t0 = Date.now();
  // 1 s without progress, found within a 250 ms sweep, once the socket buffers filled.
  while (hugeCut === 0 && Date.now() - t0 < 15_000) await new Promise((r) => setTimeout(r, 50));
  assert.equal(hugeCut, 1, `the backend response was abandoned, not left holding its connection (${Date.now() - t0} ms)`);
  assert.equal(inFlight.get('huge'), 0);
  // The client, reading at last, finds its connection reset.
  const closed = new Promise<void>((r) => slow.on('close', () => r()));
  slow.resume();
  const ended = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 10_000))]);
  assert.ok(ended, 'the client connection was closed');
});

test('connections beyond the listener\'s maxConnections are closed; open ones are unaffected', async () => {
  const held: Socket[] = [];
  for (let i = 0; i < 40; i++) held.push(await dial());
  // node:http counts a connection once it is accepted: let the last ones land.
  const extra = await dial();
  const [closed] = await Promise.race([once(extra, 'close').then(() => [true]), new Promise<boolean[]>((r) => setTimeout(() => r([false]), 5000))]);
  assert.ok(closed, 'the 41st connection is closed');
  const first = held[0];
  first.write('GET /small/1 HTTP/1.1\r\nHost: a\r\n\r\n');
  const [data] = await once(first, 'data') as [Buffer];
  assert.match(data.toString(), /^HTTP\/1\.1 200/);
  for (const s of held) s.destroy();
  const metrics = await (await fetch(`${t.admin}/metrics`)).text();
  const refused = /^tandem_listener_refused_connections_total\{listener="web"\} (\d+)$/m.exec(metrics);
  assert.ok(refused !== null && Number(refused[1]) >= 1, `the refusal is counted: ${refused?.[0]}`);
});
