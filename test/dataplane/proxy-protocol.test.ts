import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { connect as h2connect } from 'node:http2';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { readFileSync } from 'node:fs';
import { parseProxyHeader } from '../../src/dataplane/proxy-protocol.ts';
import { TestCa } from '../helpers/certs.ts';
import { config } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

// PROXY protocol v1 and v2 written by hand on raw sockets: the client address it names
// reaches X-Forwarded-For, allow lists and the access log; untrusted peers and malformed
// headers are not believed.

let backend: Server;
let t: TandemProcess;
const ca = new TestCa();

before(async () => {
  backend = createServer((req, res) => {
    req.resume();
    res.end(JSON.stringify({ xff: req.headers['x-forwarded-for'], url: req.url }));
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  const leaf = ca.issue('pp.test', ['pp.test', 'IP:127.0.0.1']);
  t = await startTandem(config({
    accessLog: { path: 'stdout' },
    listeners: [
      { name: 'lb', address: '127.0.0.1:0', proxyProtocol: { from: ['127.0.0.0/8'] }, http2: true },
      { name: 'lbtls', address: '127.0.0.1:0', proxyProtocol: { from: ['127.0.0.1'] }, tls: leaf },
      { name: 'other', address: '127.0.0.1:0', proxyProtocol: { from: ['10.0.0.0/8'] } },
    ],
    routes: [
      { name: 'office', match: { pathPrefix: '/office' }, pool: 'p', allow: ['203.0.113.0/24'] },
      { name: 'all', pool: 'p' },
    ],
    pools: { p: { backends: [{ name: 'b', url }] } },
  }));
});

after(async () => {
  await t?.stop();
  await new Promise((resolve) => backend?.close(resolve));
});

function port(name: string): number {
  return Number(t.listeners.get(name)!.split(':')[1]);
}

/** Writes `bytes` on a fresh connection and returns everything read until the server closes it. */
function exchange(p: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s: Socket = connect(p, '127.0.0.1', () => s.write(bytes));
    let out = '';
    s.on('data', (d) => { out += d.toString('latin1'); });
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.setTimeout(20_000, () => s.destroy(new Error('no answer')));
  });
}

const request = (path: string) => Buffer.from(`GET ${path} HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n\r\n`, 'latin1');

function v2(address: number[], sourcePort: number, command = 0x21): Buffer {
  const head = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, command, 0x11, 0x00, 12]);
  const body = Buffer.alloc(12);
  Buffer.from(address).copy(body, 0);
  Buffer.from([10, 0, 0, 1]).copy(body, 4);
  body.writeUInt16BE(sourcePort, 8);
  body.writeUInt16BE(443, 10);
  return Buffer.concat([head, body]);
}

test('v1 from a trusted source: its client address is X-Forwarded-For and passes the allow list', async () => {
  // The access log line may be written before the answer has been read here: look from before the request.
  const from = t.output().length;
  const out = await exchange(port('lb'), Buffer.concat([Buffer.from('PROXY TCP4 203.0.113.9 10.0.0.1 51000 80\r\n'), request('/office/x')]));
  assert.match(out, /^HTTP\/1\.1 200/);
  assert.match(out, /"xff":"203\.0\.113\.9"/);
  await t.waitForLog(/"client":"203\.0\.113\.9"/, { from, timeoutMs: 60_000 });
});

test('v2 from a trusted source, IPv4 and IPv6', async () => {
  const out = await exchange(port('lb'), Buffer.concat([v2([198, 51, 100, 7], 40000), request('/x')]));
  assert.match(out, /"xff":"198\.51\.100\.7"/);
  const head = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x21, 0x00, 36]);
  const body = Buffer.alloc(36);
  body.writeUInt16BE(0x2001, 0);
  body.writeUInt16BE(0x0db8, 2);
  body.writeUInt16BE(0x0007, 14);
  body.writeUInt16BE(1234, 32);
  const six = await exchange(port('lb'), Buffer.concat([head, body, request('/x')]));
  assert.match(six, /"xff":"2001:db8::7"/);
  // LOCAL (a balancer's own health check): the peer address stands.
  const local = await exchange(port('lb'), Buffer.concat([v2([0, 0, 0, 0], 0, 0x20), request('/x')]));
  assert.match(local, /"xff":"127\.0\.0\.1"/);
});

test('a client outside the allow list is refused by the address its balancer names', async () => {
  const out = await exchange(port('lb'), Buffer.concat([Buffer.from('PROXY TCP4 192.0.2.1 10.0.0.1 51000 80\r\n'), request('/office/x')]));
  assert.match(out, /^HTTP\/1\.1 403/);
});

test('from a trusted source the header is required and checked strictly', async () => {
  for (const bad of ['GET / HTTP/1.1\r\n', 'PROXY TCP4 203.0.113.300 10.0.0.1 1 80\r\n', 'PROXY TCP4 203.0.113.1 10.0.0.1 99999 80\r\n',
    'PROXY TCP6 203.0.113.1 10.0.0.1 1 80\r\n', `PROXY TCP4 ${'1'.repeat(120)}\r\n`]) {
    const out = await exchange(port('lb'), Buffer.concat([Buffer.from(bad), request('/x')]));
    assert.equal(out, '', `answered after ${JSON.stringify(bad)}`);
  }
});

test('from an untrusted source a PROXY header is not believed', async () => {
  const out = await exchange(port('other'), Buffer.concat([Buffer.from('PROXY TCP4 203.0.113.9 10.0.0.1 51000 80\r\n'), request('/x')]));
  assert.match(out, /^HTTP\/1\.1 400/);
  const plain = await exchange(port('other'), request('/x'));
  assert.match(plain, /"xff":"127\.0\.0\.1"/);
});

test('before TLS and before HTTP/2 prior knowledge', async () => {
  const tlsOut = await new Promise<string>((resolve, reject) => {
    const raw = connect(port('lbtls'), '127.0.0.1', () => {
      raw.write('PROXY TCP4 203.0.113.50 10.0.0.1 51000 443\r\n');
      const s = tlsConnect({ socket: raw, ca: [readFileSync(ca.cert)], servername: 'pp.test' }, () => s.write(request('/x')));
      let out = '';
      s.on('data', (d) => { out += d.toString(); });
      s.on('close', () => resolve(out));
      s.on('error', reject);
    });
  });
  assert.match(tlsOut, /"xff":"203\.0\.113\.50"/);

  const h2Out = await new Promise<string>((resolve, reject) => {
    const session = h2connect(`http://127.0.0.1:${port('lb')}`, {
      createConnection: () => {
        const raw = connect(port('lb'), '127.0.0.1');
        raw.write('PROXY TCP4 203.0.113.60 10.0.0.1 51000 80\r\n');
        return raw;
      },
    });
    session.on('error', reject);
    const r = session.request({ ':path': '/h2' });
    let out = '';
    r.on('data', (d) => { out += d; });
    r.on('end', () => { session.close(); resolve(out); });
    r.on('error', reject);
  });
  assert.match(h2Out, /"xff":"203\.0\.113\.60"/);
});

test('parser: partial input asks for more; lengths are exact', () => {
  const v1 = Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET');
  for (let i = 0; i < v1.length - 5; i++) assert.equal(parseProxyHeader(v1.subarray(0, i)).state, 'more', `at ${i}`);
  assert.deepEqual(parseProxyHeader(v1), { state: 'done', length: v1.length - 3, peer: { address: '1.2.3.4', port: 1, destination: '5.6.7.8', destinationPort: 2 } });
  const two = v2([1, 2, 3, 4], 9);
  for (let i = 0; i < two.length; i++) assert.equal(parseProxyHeader(two.subarray(0, i)).state, 'more', `at ${i}`);
  assert.deepEqual(parseProxyHeader(two), { state: 'done', length: 28, peer: { address: '1.2.3.4', port: 9, destination: '10.0.0.1', destinationPort: 443 } });
  assert.equal(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n')).state, 'done');
  assert.equal(parseProxyHeader(Buffer.from('PROXZ')).state, 'error');
});
