import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer, request, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { connect as h2connect } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import { negotiate } from '../../src/dataplane/compress.ts';
import { config } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

// Routes with `compress`: real clients (curl --compressed, node's http and http2 clients)
// get gzip or brotli by their Accept-Encoding and decode it with node's zlib; responses
// that must not or need not be compressed go through untouched; the access log counts
// the compressed bytes; a slow client holds the backend back.

const PAGE = Buffer.from('<html><body>' + 'tandem compresses text for clients that ask. '.repeat(500) + '</body></html>');
const CHUNK = Buffer.from(randomBytes(768 * 1024).toString('base64')); // 1 MiB of text that barely compresses
const BIG_CHUNKS = 32;
let written = 0;

let backend: Server;
let t: TandemProcess;

function send(res: ServerResponse, status: number, headers: Record<string, string | number>, body: Buffer | string = ''): void {
  res.writeHead(status, headers);
  res.end(body);
}

before(async () => {
  backend = createServer((req, res) => {
    req.resume();
    const path = (req.url ?? '/').replace(/^\/plain/, '');
    switch (path) {
      case '/page': return send(res, 200, { 'content-type': 'text/html; charset=utf-8', 'content-length': PAGE.length, etag: '"v1"' }, PAGE);
      case '/json': // chunked: no Content-Length
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('[');
        for (let i = 0; i < 200; i++) res.write(`${i === 0 ? '' : ','}{"n":${i},"text":"some repeated json text"}`);
        return void res.end(']');
      case '/small': return send(res, 200, { 'content-type': 'text/plain', 'content-length': 5 }, 'small');
      case '/png': return send(res, 200, { 'content-type': 'image/png', 'content-length': PAGE.length }, PAGE);
      case '/untyped': return send(res, 200, { 'content-length': PAGE.length }, PAGE);
      case '/encoded': return send(res, 200, { 'content-type': 'text/html', 'content-encoding': 'gzip' }, gzipOf(PAGE));
      case '/no-transform': return send(res, 200, { 'content-type': 'text/html', 'cache-control': 'public, no-transform' }, PAGE);
      case '/empty': return send(res, 204, { 'content-type': 'text/html' });
      case '/not-modified': return send(res, 304, { 'content-type': 'text/html', etag: '"v1"' });
      case '/range':
        if (req.headers.range !== undefined) return send(res, 206, { 'content-type': 'text/html', 'content-range': `bytes 0-9/${PAGE.length}` }, PAGE.subarray(0, 10));
        return send(res, 200, { 'content-type': 'text/html' }, PAGE);
      case '/events': return send(res, 200, { 'content-type': 'text/event-stream' }, 'data: x\n\n'.repeat(200));
      case '/progress': return send(res, 200, { 'content-type': 'application/json' }, JSON.stringify({ written }));
      case '/big': {
        written = 0;
        res.writeHead(200, { 'content-type': 'text/plain' });
        let i = 0;
        const more = (): void => {
          while (i < BIG_CHUNKS) {
            i++;
            written += CHUNK.length;
            if (!res.write(CHUNK)) return void res.once('drain', more);
          }
          res.end();
        };
        return more();
      }
      default: return send(res, 404, { 'content-type': 'text/plain' }, 'no');
    }
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  t = await startTandem(config({
    accessLog: { path: 'stdout' },
    listeners: [{ name: 'web', address: '127.0.0.1:0', http2: true }],
    routes: [
      { name: 'plain', match: { pathPrefix: '/plain' }, pool: 'p' },
      { name: 'site', pool: 'p', compress: true },
    ],
    pools: { p: { backends: [{ name: 'b', url }] } },
  }));
});

after(async () => {
  await t?.stop();
  await new Promise((resolve) => backend?.close(resolve));
});

/** What a backend that encodes by itself sends. */
function gzipOf(b: Buffer): Buffer {
  return gzipSync(b);
}

interface Got { status: number; headers: IncomingHttpHeaders; body: Buffer }

function get(path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request(`${t.url}${path}`, { method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

function decode(got: Got): Buffer {
  const coding = got.headers['content-encoding'];
  if (coding === 'gzip') return gunzipSync(got.body);
  if (coding === 'br') return brotliDecompressSync(got.body);
  return got.body;
}

test('curl --compressed gets brotli, decodes the page, and the access log counts the compressed bytes', async () => {
  const from = t.output().length;
  const out = await new Promise<string>((resolve, reject) => {
    execFile('curl', ['-sS', '--compressed', '-D', '-', '-o', '/dev/null', '-w', 'downloaded=%{size_download}\n', `${t.url}/page`], (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
  assert.match(out, /^content-encoding: br\r$/im);
  assert.match(out, /^vary: Accept-Encoding\r$/im);
  assert.doesNotMatch(out, /^content-length:/im);
  const downloaded = Number(/downloaded=(\d+)/.exec(out)![1]);
  assert.ok(downloaded > 0 && downloaded < PAGE.length / 4, `compressed to ${downloaded} of ${PAGE.length}`);
  const [line] = await t.waitForLog(/\{[^\n]*"path":"\/page"[^\n]*\}/, { from });
  assert.equal((JSON.parse(line) as { bytes: number }).bytes, downloaded);
  const body = await new Promise<string>((resolve, reject) => {
    execFile('curl', ['-sS', '--compressed', `${t.url}/page`], (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
  assert.equal(body, PAGE.toString());
});

test('gzip for a client that accepts only gzip: strong ETag weakened, no Content-Length', async () => {
  const got = await get('/page', { 'accept-encoding': 'gzip' });
  assert.equal(got.headers['content-encoding'], 'gzip');
  assert.equal(got.headers.etag, 'W/"v1"');
  assert.equal(got.headers['content-length'], undefined);
  assert.equal(got.headers.vary, 'Accept-Encoding');
  assert.deepEqual(decode(got), PAGE);
  const json = await get('/json', { 'accept-encoding': 'gzip, deflate' });
  assert.equal(json.headers['content-encoding'], 'gzip');
  assert.equal((JSON.parse(decode(json).toString()) as unknown[]).length, 200);
});

test('Accept-Encoding q-values and identity are honoured', async () => {
  const cases: [string | undefined, string | undefined][] = [
    ['gzip;q=1, br;q=0.5', 'gzip'],
    ['br;q=0, gzip;q=0', undefined],
    ['gzip;q=0.5, identity', undefined],
    ['*', 'br'],
    ['*;q=0.5, gzip', 'gzip'],
    ['deflate', undefined],
    [undefined, undefined],
  ];
  for (const [accept, expected] of cases) {
    const got = await get('/page', accept === undefined ? {} : { 'accept-encoding': accept });
    assert.equal(got.headers['content-encoding'], expected, `Accept-Encoding: ${accept}`);
    assert.equal(got.headers.vary, 'Accept-Encoding', `Accept-Encoding: ${accept}`);
    assert.deepEqual(decode(got), PAGE);
  }
  assert.equal(negotiate('GZIP;Q=0.9, br;q=0.8'), 'gzip');
  assert.equal(negotiate('x-gzip'), 'gzip');
  assert.equal(negotiate('br;q=0.001'), 'br');
});

test('left as the backend sent them: HEAD, 204, 304, ranges, small, other or no type, encoded, no-transform, event streams, routes without compress', async () => {
  const br = { 'accept-encoding': 'br, gzip' };
  const head = await get('/page', br, 'HEAD');
  assert.equal(head.headers['content-encoding'], undefined);
  assert.equal(head.headers['content-length'], String(PAGE.length));
  for (const path of ['/empty', '/not-modified', '/small', '/png', '/untyped', '/no-transform', '/events', '/plain/page']) {
    const got = await get(path, br);
    assert.equal(got.headers['content-encoding'], undefined, path);
  }
  const range = await get('/range', { ...br, range: 'bytes=0-9' });
  assert.equal(range.status, 206);
  assert.equal(range.headers['content-encoding'], undefined);
  assert.equal(range.body.length, 10);
  const encoded = await get('/encoded', br);
  assert.equal(encoded.headers['content-encoding'], 'gzip');
  assert.deepEqual(gunzipSync(encoded.body), PAGE, 'not encoded twice');
  const plain = await get('/plain/page', br);
  assert.equal(plain.headers.vary, undefined, 'a route without compress adds nothing');
  assert.equal(plain.headers.etag, '"v1"');
});

test('an HTTP/2 client gets gzip too', async () => {
  const session = h2connect(t.url);
  try {
    const got = await new Promise<Got>((resolve, reject) => {
      const s = session.request({ ':path': '/page', 'accept-encoding': 'gzip' });
      let headers: IncomingHttpHeaders = {};
      const chunks: Buffer[] = [];
      s.on('response', (h) => { headers = h as IncomingHttpHeaders; });
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () => resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(chunks) }));
      s.on('error', reject);
      s.end();
    });
    assert.equal(got.status, 200);
    assert.equal(got.headers['content-encoding'], 'gzip');
    assert.deepEqual(decode(got), PAGE);
  } finally {
    session.close();
  }
});

test('a client that stops reading holds the backend back through the encoder', async () => {
  const total = CHUNK.length * BIG_CHUNKS;
  const got = await new Promise<{ held: number; body: Buffer }>((resolve, reject) => {
    const req = request(`${t.url}/big`, { headers: { 'accept-encoding': 'gzip' } }, (res) => {
      assert.equal(res.headers['content-encoding'], 'gzip');
      res.pause();
      // Everything that could be buffered on the way fills up within this pause.
      setTimeout(() => {
        const port = (backend.address() as AddressInfo).port;
        request(`http://127.0.0.1:${port}/progress`, (p) => {
          let text = '';
          p.on('data', (d) => { text += d; });
          p.on('end', () => {
            const held = (JSON.parse(text) as { written: number }).written;
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => resolve({ held, body: Buffer.concat(chunks) }));
            res.resume();
          });
        }).on('error', reject).end();
      }, 1500);
    });
    req.on('error', reject);
    req.end();
  });
  assert.ok(got.held < total * 0.75, `the backend wrote ${got.held} of ${total} bytes while the client read nothing`);
  const body = gunzipSync(got.body);
  assert.equal(body.length, total);
  assert.deepEqual(body.subarray(0, CHUNK.length), CHUNK);
});

test('a client that leaves in the middle of a compressed body ends the exchange: logged, and nothing left in flight', async () => {
  const from = t.output().length;
  await new Promise<void>((resolve, reject) => {
    const req = request(`${t.url}/big`, { headers: { 'accept-encoding': 'br' } }, (res) => {
      assert.equal(res.headers['content-encoding'], 'br');
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', () => {});
    req.on('close', () => resolve());
    req.setTimeout(20_000, () => reject(new Error('no answer')));
    req.end();
  });
  const [line] = await t.waitForLog(/\{[^\n]*"path":"\/big"[^\n]*\}/, { from });
  const entry = JSON.parse(line) as { status: number; bytes: number };
  assert.equal(entry.status, 200);
  assert.ok(entry.bytes < CHUNK.length * BIG_CHUNKS, `${entry.bytes} bytes went out`);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const text = await (await fetch(`${t.admin}/metrics`)).text();
    const active = text.split('\n').find((l) => l.startsWith('tandem_backend_active_requests{') && l.includes('backend="b"'));
    if (active !== undefined && active.endsWith(' 0')) break;
    assert.ok(Date.now() < deadline, `still in flight: ${active}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
});
