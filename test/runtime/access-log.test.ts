import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { startBackend } from '../helpers/backends.ts';
import { readLog, startRecorder, waitForLine, type LogLine, type Recorder } from '../helpers/access-log.ts';
import { config, singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

// The access log of a real tandem: its fields, `bytes` of every kind of answer (proxied,
// tandem's own, HTTP/2), X-Request-Id and the W3C trace context. Rotation is in
// access-log-rotate.test.ts, WebSocket sessions in access-log-websocket.test.ts.

const ROOT = join(import.meta.dirname, '../..');
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

let rec: Recorder;
let t: TandemProcess;
let file: string;
let path = 0;
/** A path no other request of this file uses, so that its line is told apart. */
const unique = (prefix: string) => `${prefix}/${++path}`;

before(async () => {
  rec = await startRecorder();
  // Port 1 on loopback: refused at once. (A port 0 gave and then closed again can be
  // handed to another test's server running meanwhile.)
  const gone = 1;
  file = join(mkdtempSync(join(tmpdir(), 'tandem-access-')), 'access.log');
  t = await startTandem(config({
    accessLog: { path: file },
    listeners: [{ name: 'web', address: '127.0.0.1:0', http2: true }],
    routes: [
      { name: 'moved', match: { pathPrefix: '/moved' }, pool: 'rec', redirect: { path: '/new', code: 301 } },
      { name: 'private', match: { pathPrefix: '/private' }, pool: 'rec', allow: ['10.0.0.0/8'] },
      { name: 'down', match: { pathPrefix: '/down' }, pool: 'down' },
      { name: 'limited', match: { pathPrefix: '/limited' }, pool: 'rec', rateLimit: { requests: 1, per: '1h' } },
      { name: 'api', match: { pathPrefix: '/api' }, pool: 'rec' },
      { name: 'own', match: { pathPrefix: '/own-id' }, pool: 'rec' },
    ],
    pools: {
      rec: { backends: [{ name: 'rec', url: rec.url }] },
      down: { backends: [{ name: 'gone', url: `http://127.0.0.1:${gone}` }], retries: 0 },
    },
  }));
});

after(async () => {
  await t?.stop();
  await rec?.close();
});

/** GET (or `method`) `p` over HTTP/1.1; the answer's status, headers and body, and its log line. */
async function get(p: string, opts: { method?: string; headers?: Record<string, string>; body?: string } = {}) {
  const r = await request(`${t.url}${p}`, { method: (opts.method ?? 'GET') as 'GET', headers: opts.headers, body: opts.body });
  const body = Buffer.from(await r.body.arrayBuffer());
  const line = await waitForLine(file, (l) => l.path === p.split('?')[0]);
  return { status: r.statusCode, headers: r.headers, body, line };
}

test('one JSON line per request with every field docs/configuration.md documents, and no other', async () => {
  const p = unique('/api/items');
  const r = await get(`${p}?secret=1`, { headers: { host: 'shop.example', 'user-agent': 'test' } });
  assert.equal(r.status, 200);
  const l = r.line;
  const documented = [...readFileSync(join(ROOT, 'docs/configuration.md'), 'utf8')
    .split('\n## accessLog\n')[1].split('\n## ')[0]
    .matchAll(/^\| `(\w+)` \| /gm)].map((m) => m[1]);
  assert.deepEqual(Object.keys(l), documented, 'the fields, in the documented order');
  assert.equal(l.path, p, 'the query string stays out of the log');
  assert.equal(l.host, 'shop.example');
  assert.equal(l.method, 'GET');
  assert.equal(l.protocol, 'HTTP/1.1');
  assert.equal(l.status, 200);
  assert.equal(l.bytes, r.body.length);
  assert.equal(l.received, 0);
  assert.equal(l.pool, 'rec');
  assert.equal(l.backend, 'rec');
  assert.equal(l.client, '127.0.0.1');
  assert.equal(l.retries, 0);
  assert.equal(l.error, null);
  assert.equal(l.upgrade, null);
  assert.equal(l.traceId, null);
  assert.ok(l.duration > 0 && l.duration < 10_000, `duration ${l.duration} ms`);
  assert.ok(Math.abs(Date.parse(l.time) - Date.now()) < 60_000, l.time);
});

test('bytes is the body the client got, for tandem\'s own answers too; received is the body the backend got', async () => {
  const cases: [string, string, number, string | null][] = [
    [unique('/nothing'), 'GET', 404, 'TANDEM_ERR_NO_ROUTE'],
    [unique('/down'), 'GET', 502, 'TANDEM_ERR_BACKEND_UNREACHABLE'],
    [unique('/private'), 'GET', 403, 'TANDEM_ERR_FORBIDDEN'],
    [unique('/moved'), 'GET', 301, null],
    [unique('/nothing'), 'HEAD', 404, 'TANDEM_ERR_NO_ROUTE'],
    [unique('/api/head'), 'HEAD', 200, null],
  ];
  for (const [p, method, status, error] of cases) {
    const r = await get(p, { method });
    assert.equal(r.status, status, p);
    assert.equal(r.line.status, status, p);
    assert.equal(r.line.error, error, p);
    assert.equal(r.line.bytes, r.body.length, `${method} ${p}: bytes is the body the client got`);
    assert.equal(r.headers['x-request-id'], r.line.requestId, `${p}: tandem's own answers carry the request id`);
    if (method === 'GET' && status >= 400) assert.ok(r.line.bytes > 0 && JSON.parse(r.body.toString()).error === error);
  }
  // The rate limit: one request an hour; the second is tandem's 429.
  const first = await get(unique('/limited'));
  const second = await get(unique('/limited'));
  assert.deepEqual([first.status, second.status], [200, 429]);
  assert.equal(second.line.bytes, second.body.length);
  assert.equal(second.line.error, 'TANDEM_ERR_RATE_LIMITED');

  const upload = 'x'.repeat(3000);
  const post = await get(unique('/api/upload'), { method: 'POST', body: upload });
  assert.equal(post.line.received, upload.length);
  assert.equal(post.line.bytes, post.body.length);
});

test('HTTP/2 answers: bytes of a proxied one and of tandem\'s own', async () => {
  const session = h2connect(`http://${t.listeners.get('web')}`);
  try {
    for (const [p, status] of [[unique('/api/h2'), 200], [unique('/nothing-h2'), 404]] as const) {
      const stream = session.request({ ':path': p, ':method': 'GET' });
      const [headers] = await once(stream, 'response') as [Record<string, string | number>];
      const chunks: Buffer[] = [];
      for await (const c of stream) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks);
      const l = await waitForLine(file, (x) => x.path === p);
      assert.equal(headers[':status'], status);
      assert.equal(l.status, status);
      assert.equal(l.protocol, 'HTTP/2.0');
      assert.ok(body.length > 0);
      assert.equal(l.bytes, body.length, `${p}: bytes is the body the client got`);
      assert.equal(headers['x-request-id'], l.requestId);
    }
  } finally {
    session.close();
  }
});

test('X-Request-Id: made when there is none, passed upstream, returned, logged', async () => {
  const p = unique('/api/new-id');
  const r = await get(p);
  const id = r.line.requestId;
  assert.match(id, UUID);
  assert.equal(rec.get(p)?.headers['x-request-id'], id, 'the backend got it');
  assert.equal(r.headers['x-request-id'], id, 'the client got it back');
  // Another request, another id.
  assert.notEqual((await get(unique('/api/new-id'))).line.requestId, id);
  // The backend's own X-Request-Id does not reach the client: the logged one does.
  const own = await get(unique('/own-id'));
  assert.equal(own.headers['x-request-id'], own.line.requestId);
});

test('X-Request-Id: a sane one from the client is kept', async () => {
  // Quotes and backslashes are visible ASCII too: kept, and escaped in the log line.
  for (const given of ['abc-123_XYZ.9', 'f3b0c442-98fc-1c14-9afb-4c8996fb9242', 'x'.repeat(128), '~!#$%&*+/:=@[]^{|}', 'a"quote\\and\\"back']) {
    const p = unique('/api/kept');
    const r = await get(p, { headers: { 'x-request-id': given } });
    assert.equal(r.line.requestId, given);
    assert.equal(rec.get(p)?.headers['x-request-id'], given);
    assert.equal(r.headers['x-request-id'], given);
  }
});

/** Sends `head` on a raw connection and reads the whole answer (tandem closes after it, asked to). */
async function raw(head: string | Buffer): Promise<string> {
  const [host, port] = t.listeners.get('web')!.split(':');
  const socket = connect(Number(port), host);
  await once(socket, 'connect');
  socket.write(head);
  let text = '';
  socket.on('data', (d: Buffer) => { text += d.toString('latin1'); });
  await once(socket, 'close');
  return text;
}

test('X-Request-Id: a hostile one is replaced, upstream, in the answer and in the log', async () => {
  const hostile: [string, Buffer][] = [
    ['too long', Buffer.from('x'.repeat(129))],
    ['a tab', Buffer.from('abc\tdef')],
    ['a space', Buffer.from('abc def')],
    ['non-ASCII bytes', Buffer.from([0x61, 0xe9, 0xff, 0x62])],
  ];
  for (const [why, value] of hostile) {
    const p = unique('/api/hostile');
    const text = await raw(Buffer.concat([
      Buffer.from(`GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: `), value, Buffer.from('\r\n\r\n'),
    ]));
    assert.match(text, /^HTTP\/1\.1 200 /, why);
    const l = await waitForLine(file, (x) => x.path === p);
    assert.match(l.requestId, UUID, `${why}: replaced`);
    assert.equal(rec.get(p)?.headers['x-request-id'], l.requestId, `${why}: the backend got the replacement only`);
    assert.deepEqual(rec.get(p)?.raw.filter((_, i, a) => i % 2 === 1 && a[i - 1].toLowerCase() === 'x-request-id'), [l.requestId]);
    assert.ok(text.includes(`\r\nx-request-id: ${l.requestId}\r\n`), `${why}: the client got the replacement`);
  }
  // Other control characters (NUL, CR, DEL...) never get this far: the parser refuses
  // the request, and its 400 has an id of its own.
  const refused = await raw('GET /api/del HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\x7fb\r\n\r\n');
  assert.match(refused, /^HTTP\/1\.1 400 [^]*\r\nx-request-id: [0-9a-f-]{36}\r\n/);
  // Two of them, each sane: which one would be meant? Neither.
  const p = unique('/api/two');
  await raw(`GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Request-Id: one\r\nX-Request-Id: two\r\n\r\n`);
  const l = await waitForLine(file, (x) => x.path === p);
  assert.match(l.requestId, UUID);
  assert.equal(rec.get(p)?.headers['x-request-id'], l.requestId);
});

test('a request that cannot be parsed is logged with its 400 and the body the client got', async () => {
  const before = readLog(file).length;
  const text = await raw('GET /bad path with spaces HTTP/1.1\r\nHost: x\r\n\r\n');
  assert.match(text, /^HTTP\/1\.1 400 /);
  const body = text.slice(text.indexOf('\r\n\r\n') + 4);
  const id = /\r\nx-request-id: (\S+)\r\n/.exec(text)![1];
  const l = await waitForLine(file, (x) => x.requestId === id);
  assert.ok(readLog(file).length > before);
  assert.deepEqual([l.method, l.host, l.path, l.protocol, l.status, l.error], [null, null, null, null, 400, 'TANDEM_ERR_BAD_REQUEST']);
  assert.equal(l.bytes, Buffer.byteLength(body));
});

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = `00-${TRACE}-00f067aa0ba902b7-01`;

test('traceparent: a valid one reaches the backend unchanged with tracestate, and its trace id is logged', async () => {
  const state = 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7';
  for (const tp of [PARENT, `00-${TRACE}-00f067aa0ba902b7-00`, `01-${TRACE}-00f067aa0ba902b7-01-future-fields`]) {
    const p = unique('/api/traced');
    const r = await get(p, { headers: { traceparent: tp, tracestate: state } });
    assert.equal(r.status, 200);
    assert.equal(rec.get(p)?.headers.traceparent, tp);
    assert.equal(rec.get(p)?.headers.tracestate, state);
    assert.equal(r.line.traceId, TRACE);
  }
});

test('traceparent: an invalid one is not passed on, nor its tracestate', async () => {
  const invalid = [
    `00-${TRACE.toUpperCase()}-00f067aa0ba902b7-01`, // upper-case hex
    `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`, // all-zero trace id
    `00-${TRACE}-${'0'.repeat(16)}-01`, // all-zero parent id
    `ff-${TRACE}-00f067aa0ba902b7-01`, // version ff
    `00-${TRACE}-00f067aa0ba902b7-01-extra`, // version 00 is exactly 55 long
    `00-${TRACE}-00f067aa0ba902b7`, // no flags
    'garbage',
  ];
  for (const tp of invalid) {
    const p = unique('/api/untraced');
    const r = await get(p, { headers: { traceparent: tp, tracestate: 'congo=t61rcWkgMzE' } });
    assert.equal(r.status, 200, tp);
    assert.equal(rec.get(p)?.headers.traceparent, undefined, tp);
    assert.equal(rec.get(p)?.headers.tracestate, undefined, tp);
    assert.equal(r.line.traceId, null, tp);
  }
  // Two traceparent fields, each valid alone.
  const p = unique('/api/two-parents');
  await raw(`GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\ntraceparent: ${PARENT}\r\ntraceparent: ${PARENT}\r\n\r\n`);
  const l: LogLine = await waitForLine(file, (x) => x.path === p);
  assert.equal(l.traceId, null);
  assert.equal(rec.get(p)?.headers.traceparent, undefined);
});

test('an access log that cannot be written is reported once and traffic goes on', async () => {
  const b = await startBackend({ name: 'plain' });
  const t2 = await startTandem(singlePool([{ name: 'plain', url: b.url }], {}, { accessLog: { path: '/nonexistent-tandem-dir/access.log' } }));
  try {
    const workers = t2.workerPids();
    for (let i = 0; i < 20; i++) assert.equal((await request(`${t2.url}/`)).statusCode, 200);
    assert.deepEqual(t2.workerPids(), workers, 'no worker died');
    assert.match(t2.output(), /access log \/nonexistent-tandem-dir\/access\.log: .*dropping access log lines/);
    assert.equal(t2.output().match(/dropping access log lines/g)?.length, 1, 'said once');
  } finally {
    await t2.stop();
    await b.close();
  }
});
