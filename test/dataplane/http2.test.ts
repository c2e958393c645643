import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { connect, constants, type ClientHttp2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { TestCa } from '../helpers/certs.ts';
import { config } from '../helpers/config.ts';
import { FLAG, FRAME, RawH2, frame, getHeaders, hpackInt, literal } from '../helpers/h2-raw.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

// HTTP/2 to clients, with real clients: curl --http2 (ALPN) and --http2-prior-knowledge
// (h2c), node's http2 client, and hand-written frames for the abuse HTTP/2 is known for.

const run = promisify(execFile);
const ca = new TestCa();
let backend: Server;
let requests = 0;
let t: TandemProcess;
let plain = 0;
let secure = 0;

before(async () => {
  backend = createServer((req, res) => {
    requests++;
    if (req.url === '/big') {
      // 8 MiB in 64 KiB chunks, honouring backpressure.
      const chunk = Buffer.alloc(65536, 'x');
      let left = 128;
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
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
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (c: Buffer) => { bytes += c.length; hash.update(c); });
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', connection: 'keep-alive' });
      res.end(JSON.stringify({ method: req.method, url: req.url, host: req.headers.host, cookie: req.headers.cookie ?? null,
        bytes, sha256: hash.digest('hex'), via: req.headers.via, xfp: req.headers['x-forwarded-proto'] }));
    });
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  const leaf = ca.issue('h2.test', ['h2.test', 'IP:127.0.0.1']);
  t = await startTandem(config({
    listeners: [
      { name: 'plain', address: '127.0.0.1:0', http2: true },
      { name: 'secure', address: '127.0.0.1:0', http2: true, tls: leaf },
    ],
    routes: [{ name: 'all', pool: 'p' }],
    // A backend that refuses connections first: requests are retried on the live one.
    pools: { p: { backends: [{ name: 'dead', url: 'http://127.0.0.1:1' }, { name: 'live', url }], retries: 1 } },
  }));
  plain = Number(t.listeners.get('plain')!.split(':')[1]);
  secure = Number(t.listeners.get('secure')!.split(':')[1]);
});

after(async () => {
  await t?.stop();
  await new Promise((resolve) => backend?.close(resolve));
});

async function curl(args: string[]): Promise<{ version: string; body: Record<string, unknown> }> {
  const { stdout } = await run('curl', ['-sS', '--cacert', ca.cert, '-w', '\n%{http_version}', ...args], { timeout: 30_000 });
  const nl = stdout.lastIndexOf('\n');
  return { version: stdout.slice(nl + 1), body: JSON.parse(stdout.slice(0, nl)) as Record<string, unknown> };
}

test('curl --http2 negotiates h2 by ALPN on TLS; --http1.1 still gets HTTP/1.1', async () => {
  const h2 = await curl(['--http2', '--resolve', `h2.test:${secure}:127.0.0.1`, `https://h2.test:${secure}/a?b=1`, '-H', 'cookie: x=1', '-H', 'cookie: y=2']);
  assert.equal(h2.version, '2');
  assert.deepEqual([h2.body.method, h2.body.url, h2.body.host, h2.body.cookie, h2.body.xfp], ['GET', '/a?b=1', `h2.test:${secure}`, 'x=1; y=2', 'https']);
  const h1 = await curl(['--http1.1', '--resolve', `h2.test:${secure}:127.0.0.1`, `https://h2.test:${secure}/c`]);
  assert.equal(h1.version, '1.1');
});

test('curl --http2-prior-knowledge speaks h2c on a plain listener; HTTP/1.1 and Upgrade: h2c get HTTP/1.1', async () => {
  const h2c = await curl(['--http2-prior-knowledge', '-d', 'hello', `http://127.0.0.1:${plain}/post`]);
  assert.equal(h2c.version, '2');
  assert.deepEqual([h2c.body.method, h2c.body.bytes], ['POST', 5]);
  const h1 = await curl(['--http1.1', `http://127.0.0.1:${plain}/h1`]);
  assert.equal(h1.version, '1.1');
  // curl --http2 on plain HTTP asks for the upgrade; the answer comes over HTTP/1.1.
  const upgrade = await curl(['--http2', `http://127.0.0.1:${plain}/upgrade`]);
  assert.equal(upgrade.version, '1.1');
  assert.equal(upgrade.body.url, '/upgrade');
});

function h2session(url: string): ClientHttp2Session {
  const s = connect(url, { rejectUnauthorized: false });
  s.on('error', () => {});
  return s;
}

function h2request(s: ClientHttp2Session, headers: Record<string, string>, body?: Buffer): Promise<{ status: number; data: Buffer }> {
  return new Promise((resolve, reject) => {
    const r = s.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let status = 0;
    r.on('response', (h) => { status = Number(h[':status']); });
    r.on('data', (c: Buffer) => chunks.push(c));
    r.on('end', () => resolve({ status, data: Buffer.concat(chunks) }));
    r.on('error', reject);
    if (body !== undefined) r.end(body);
  });
}

test('node http2 client: concurrent streams on one session, bodies streamed both ways, retried past a dead backend', async () => {
  const s = h2session(`https://127.0.0.1:${secure}`);
  const before = requests;
  const results = await Promise.all(Array.from({ length: 30 }, (_, i) => h2request(s, { ':path': `/n${i}` })));
  for (const [i, r] of results.entries()) {
    assert.equal(r.status, 200);
    assert.equal((JSON.parse(r.data.toString()) as { url: string }).url, `/n${i}`);
  }
  assert.equal(requests - before, 30);
  // 4 MiB up without a content-length: streamed, hashed by the backend.
  const up = Buffer.alloc(4 << 20, 'y');
  const posted = await h2request(s, { ':path': '/upload', ':method': 'POST' }, up);
  const seen = JSON.parse(posted.data.toString()) as { bytes: number; sha256: string };
  assert.equal(seen.bytes, up.length);
  assert.equal(seen.sha256, createHash('sha256').update(up).digest('hex'));
  // 8 MiB down.
  const big = await h2request(s, { ':path': '/big' });
  assert.equal(big.data.length, 8 << 20);
  s.close();
});

test('HTTP/2 requests are counted like HTTP/1.1 ones', async () => {
  const metrics = await (await fetch(`${t.admin}/metrics`)).text();
  const line = metrics.split('\n').find((l) => l.startsWith('tandem_requests_total{') && l.includes('listener="secure"') && l.includes('code="200"'));
  assert.ok(line !== undefined, 'no tandem_requests_total for the secure listener');
  assert.ok(Number(line.split(' ').pop()) >= 32, line);
});

test('too many streams: past 100 open streams new ones are refused, and a client that insists is disconnected', async () => {
  const raw = await RawH2.open(plain);
  const block = getHeaders('/open', `127.0.0.1:${plain}`);
  // HEADERS without END_STREAM: each stream stays open, waiting for a body that never comes.
  for (let id = 1; id <= 2 * 400; id += 2) raw.write(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, block));
  await raw.ended();
  assert.ok(raw.resets().includes(constants.NGHTTP2_REFUSED_STREAM), `resets: ${raw.resets()}`);
  raw.destroy();
});

test('rapid reset: a client that opens and cancels streams by the hundred is disconnected', async () => {
  const raw = await RawH2.open(plain);
  const block = getHeaders('/reset', `127.0.0.1:${plain}`);
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(constants.NGHTTP2_CANCEL);
  for (let id = 1; id <= 2 * 2000 && !raw.closed; id += 2) {
    raw.write(Buffer.concat([frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, id, block), frame(FRAME.RST_STREAM, 0, id, cancel)]));
    if (id % 100 === 1) await new Promise((r) => setTimeout(r, 10));
  }
  await raw.ended();
  // tandem's own count ends the session with ENHANCE_YOUR_CALM; when a busy machine lets
  // more than a thousand cancelled streams pile up in one read, nghttp2's built-in reset
  // rate limit ends it first, with INTERNAL_ERROR. Either way the client is cut off.
  const code = raw.goaway();
  assert.ok(code === null || [constants.NGHTTP2_ENHANCE_YOUR_CALM, constants.NGHTTP2_INTERNAL_ERROR].includes(code), `GOAWAY ${code}`);
  assert.ok(code !== null || /"reason":"rapid-reset"/.test(t.output()), 'the session ended without a GOAWAY or a log line');
  raw.destroy();
});

test('SETTINGS flood and PING flood: the session is ended with ENHANCE_YOUR_CALM', async () => {
  for (const [type, reason] of [[FRAME.SETTINGS, 'settings-flood'], [FRAME.PING, 'ping-flood']] as const) {
    const from = t.output().length;
    const raw = await RawH2.open(plain);
    const one = type === FRAME.PING ? frame(FRAME.PING, 0, 0, Buffer.alloc(8)) : frame(FRAME.SETTINGS, 0, 0);
    for (let i = 0; i < 20 && !raw.closed; i++) {
      raw.write(Buffer.concat(Array.from({ length: 100 }, () => one)));
      await new Promise((r) => setTimeout(r, 10));
    }
    await raw.ended();
    await t.waitForLog(new RegExp(`"event":"http2_session_refused","reason":"${reason}"`), { from });
    // The GOAWAY is read unless the flood's own writes drew a reset that discarded it.
    const code = raw.goaway();
    assert.ok(code === null || code === constants.NGHTTP2_ENHANCE_YOUR_CALM, `GOAWAY ${code}`);
    raw.destroy();
    const metrics = await (await fetch(`${t.admin}/metrics`)).text();
    const closed = new RegExp(`^tandem_http2_sessions_closed_total\\{listener="\\w+",reason="${reason}"\\} (\\d+)$`, 'm').exec(metrics);
    assert.ok(closed !== null && Number(closed[1]) >= 1, `the ${reason} close is counted`);
  }
});

test('HPACK bomb: a small header block that decodes to megabytes is refused, nothing reaches the backend', async () => {
  const before = requests;
  const raw = await RawH2.open(plain);
  // One 4000-byte field into the dynamic table, then 10000 one-byte references to it:
  // about 40 MB of headers from a 14 KB frame.
  const block = Buffer.concat([getHeaders('/bomb', `127.0.0.1:${plain}`), literal('x-bomb', 'b'.repeat(4000), true),
    Buffer.alloc(10_000, hpackInt(62, 7, 0x80)[0])]);
  raw.write(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, 1, block));
  const deadline = Date.now() + 20_000;
  while (!raw.closed && raw.resets().length === 0 && raw.goaway() === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const refused = raw.resets().length > 0 || raw.goaway() !== null || raw.closed;
  assert.ok(refused, 'the bomb was not refused');
  assert.ok(!raw.frames.some((f) => f.type === FRAME.HEADERS), 'the bomb got a response');
  assert.equal(requests, before);
  raw.destroy();
});

test('after all that, clients are served as before', async () => {
  const s = h2session(`http://127.0.0.1:${plain}`);
  const r = await h2request(s, { ':path': '/still-up' });
  assert.equal(r.status, 200);
  s.close();
  const h1 = await fetch(`http://127.0.0.1:${plain}/still-up`);
  assert.equal(h1.status, 200);
  await h1.arrayBuffer();
  assert.match(t.output(), /"event":"http2_session_refused","reason":"settings-flood"/);
});
