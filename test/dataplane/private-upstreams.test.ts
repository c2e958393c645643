import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer, request as httpRequest, Agent } from 'node:http';
import { createServer as createTcpServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { TLSSocket } from 'node:tls';
import { readFileSync } from 'node:fs';
import { TestCa, type CertFiles } from '../helpers/certs.ts';
import { config } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

// Pools that send the PROXY protocol to their backends (HAProxy's send-proxy and
// send-proxy-v2). The backends here read the header off the raw socket with a reader of
// their own (not tandem's), then serve HTTP on the rest of the connection, and say which
// of their connections answered: so the tests see that each client connection gets
// upstream connections of its own, that keep-alive reuses them, and that they close
// with it.

interface Header {
  readonly version: 1 | 2;
  readonly command: 'PROXY' | 'LOCAL' | 'UNKNOWN';
  readonly family?: string;
  readonly src?: string;
  readonly dst?: string;
  readonly srcPort?: number;
  readonly dstPort?: number;
}

/** Reads one PROXY header, v1 or v2, from the start of `data`; null: not all of it yet. */
function readHeader(data: Buffer): { header: Header; length: number } | null {
  if (data.subarray(0, 6).toString('latin1') === 'PROXY ') {
    const end = data.indexOf('\r\n');
    if (end < 0) return null;
    const f = data.toString('latin1', 0, end).split(' ');
    if (f[1] === 'UNKNOWN') return { header: { version: 1, command: 'UNKNOWN' }, length: end + 2 };
    return { header: { version: 1, command: 'PROXY', family: f[1], src: f[2], dst: f[3], srcPort: Number(f[4]), dstPort: Number(f[5]) }, length: end + 2 };
  }
  if (data.length < 16) return null;
  assert.equal(data.toString('hex', 0, 12), '0d0a0d0a000d0a515549540a', 'v2 signature');
  const length = 16 + data.readUInt16BE(14);
  if (data.length < length) return null;
  if (data[12] === 0x20) return { header: { version: 2, command: 'LOCAL' }, length };
  assert.equal(data[12], 0x21);
  if (data[13] === 0x11) {
    const ip = (o: number) => [...data.subarray(o, o + 4)].join('.');
    return { header: { version: 2, command: 'PROXY', family: 'TCP4', src: ip(16), dst: ip(20), srcPort: data.readUInt16BE(24), dstPort: data.readUInt16BE(26) }, length };
  }
  assert.equal(data[13], 0x21);
  const ip = (o: number) => Array.from({ length: 8 }, (_, i) => data.readUInt16BE(o + i * 2).toString(16)).join(':');
  return { header: { version: 2, command: 'PROXY', family: 'TCP6', src: ip(16), dst: ip(32), srcPort: data.readUInt16BE(48), dstPort: data.readUInt16BE(50) }, length };
}

/** A backend that wants a PROXY header on every connection, then HTTP (over TLS with `tls`). */
class ProxyBackend {
  readonly server: Server;
  readonly headers: Header[] = [];
  readonly closed = new Set<number>();
  private next = 0;
  private waiters: (() => void)[] = [];

  constructor(tls: CertFiles | null) {
    const http = createHttpServer((req, res) => {
      req.resume();
      const conn = (req.socket as Socket & { id?: number }).id ?? (req.socket as TLSSocket & { raw?: { id: number } }).raw!.id;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ conn, header: this.headers[conn], xff: req.headers['x-forwarded-for'] }));
    });
    http.on('upgrade', (req, socket: Socket & { id?: number }) => {
      const header = this.headers[socket.id ?? -1];
      socket.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n${JSON.stringify({ conn: socket.id, header })}`);
    });
    this.server = createTcpServer((socket: Socket & { id?: number }) => {
      let seen = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        seen = Buffer.concat([seen, chunk]);
        const got = readHeader(seen);
        if (got === null) return;
        socket.removeListener('data', onData);
        socket.pause();
        socket.id = this.next++;
        this.headers[socket.id] = got.header;
        const id = socket.id;
        socket.once('close', () => { this.closed.add(id); this.wake(); });
        if (got.length < seen.length) socket.unshift(seen.subarray(got.length));
        if (tls === null) {
          http.emit('connection', socket);
          socket.resume();
        } else {
          const secure = new TLSSocket(socket, { isServer: true, cert: readFileSync(tls.cert), key: readFileSync(tls.key) }) as TLSSocket & { raw: { id: number } };
          secure.raw = { id };
          http.emit('connection', secure);
        }
      };
      socket.on('data', onData);
      socket.on('error', () => {});
    });
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Resolves once connection `id` has closed. */
  async closedSoon(id: number): Promise<void> {
    const deadline = Date.now() + 20_000;
    while (!this.closed.has(id)) {
      assert.ok(Date.now() < deadline, `backend connection ${id} still open`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 1000);
      });
    }
  }

  async listen(host: string): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, host, resolve));
    const { port } = this.server.address() as AddressInfo;
    return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  }
}

const ca = new TestCa();
const backendCert = ca.issue('backend.test', ['backend.test', 'IP:127.0.0.1']);
const v1 = new ProxyBackend(null);
const v2 = new ProxyBackend(null);
const v6 = new ProxyBackend(null);
const secure = new ProxyBackend(backendCert);
const checked = new ProxyBackend(null);
let t: TandemProcess;
let yaml: (version: string) => string;

before(async () => {
  const [a, b, c, d, e] = await Promise.all([v1.listen('127.0.0.1'), v2.listen('127.0.0.1'), v6.listen('::1'), secure.listen('127.0.0.1'), checked.listen('127.0.0.1')]);
  yaml = (version: string) => config({
    accessLog: { path: 'stdout' },
    listeners: [
      { name: 'web', address: '127.0.0.1:0', proxyProtocol: { from: ['127.0.0.2'] } },
      { name: 'web6', address: '[::1]:0' },
      { name: 'h2c', address: '127.0.0.1:0', http2: true },
    ],
    routes: [
      { name: 'one', match: { pathPrefix: '/v1' }, pool: 'one' },
      { name: 'two', match: { pathPrefix: '/v2' }, pool: 'two' },
      { name: 'six', match: { pathPrefix: '/v6' }, pool: 'six' },
      { name: 'tls', match: { pathPrefix: '/tls' }, pool: 'tls' },
      { name: 'checked', match: { pathPrefix: '/checked' }, pool: 'checked' },
    ],
    pools: {
      one: { proxyProtocol: version, backends: [{ name: 'one', url: `http://${a}` }] },
      two: { proxyProtocol: 'v2', backends: [{ name: 'two', url: `http://${b}` }] },
      six: { proxyProtocol: 'v2', backends: [{ name: 'six', url: `http://${c}` }] },
      tls: { proxyProtocol: 'v1', tls: { ca: ca.cert, servername: 'backend.test' }, backends: [{ name: 'tls', url: `https://${d}` }] },
      checked: {
        proxyProtocol: 'v2',
        healthCheck: { path: '/health', interval: '200ms', timeout: '150ms', rise: 1, fall: 1, startUnhealthy: true },
        backends: [{ name: 'checked', url: `http://${e}` }],
      },
    },
  });
  t = await startTandem(yaml('v1'));
});

after(async () => {
  await t?.stop();
  for (const b of [v1, v2, v6, secure, checked]) b.server.close();
});

function listener(name: string): { host: string; port: number } {
  const hostPort = t.listeners.get(name)!;
  const i = hostPort.lastIndexOf(':');
  return { host: hostPort.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hostPort.slice(i + 1)) };
}

interface Answer { conn: number; header: Header; xff: string }

/** GET `path` on a keep-alive client connection of `agent` (one socket at most). */
function get(agent: Agent, path: string, on = 'web'): Promise<{ body: Answer; local: number }> {
  const { host, port } = listener(on);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host, port, path, agent }, (res) => {
      let text = '';
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}: ${text}`));
        else resolve({ body: JSON.parse(text) as Answer, local: req.socket!.localPort! });
      });
    });
    req.on('error', reject);
    req.setTimeout(20_000, () => req.destroy(new Error('no answer')));
    req.end();
  });
}

const keepAlive = () => new Agent({ keepAlive: true, maxSockets: 1 });

test('v1: a client connection keeps its own upstream connection, named by its header; another client gets another', async () => {
  const alice = keepAlive();
  const bob = keepAlive();
  const a1 = await get(alice, '/v1/a');
  const b1 = await get(bob, '/v1/b');
  const a2 = await get(alice, '/v1/a');
  const b2 = await get(bob, '/v1/b');
  assert.equal(a1.local, a2.local, 'alice kept her client connection');
  assert.equal(a2.body.conn, a1.body.conn, 'keep-alive reuses her upstream connection');
  assert.equal(b2.body.conn, b1.body.conn);
  assert.notEqual(a1.body.conn, b1.body.conn, 'two clients never share an upstream connection');
  const { port } = listener('web');
  assert.deepEqual(a1.body.header, { version: 1, command: 'PROXY', family: 'TCP4', src: '127.0.0.1', dst: '127.0.0.1', srcPort: a1.local, dstPort: port });
  assert.equal(b1.body.header.srcPort, b1.local);
  // The client connection closes: its upstream connection closes with it, not the other's.
  alice.destroy();
  await v1.closedSoon(a1.body.conn);
  assert.ok(!v1.closed.has(b1.body.conn), "bob's upstream connection is still open");
  const b3 = await get(bob, '/v1/b');
  assert.equal(b3.body.conn, b1.body.conn);
  bob.destroy();
  await v1.closedSoon(b1.body.conn);
});

test('v2 over IPv4 and IPv6 names the client and the listener', async () => {
  const agent = keepAlive();
  const r = await get(agent, '/v2/x');
  const { port } = listener('web');
  assert.deepEqual(r.body.header, { version: 2, command: 'PROXY', family: 'TCP4', src: '127.0.0.1', dst: '127.0.0.1', srcPort: r.local, dstPort: port });
  agent.destroy();
  const six = keepAlive();
  const s = await get(six, '/v6/x', 'web6');
  assert.deepEqual(s.body.header, { version: 2, command: 'PROXY', family: 'TCP6', src: '0:0:0:0:0:0:0:1', dst: '0:0:0:0:0:0:0:1', srcPort: s.local, dstPort: listener('web6').port });
  six.destroy();
});

test('behind a trusted PROXY header, the original client and destination are passed on', async () => {
  const { port } = listener('web');
  const answer = await new Promise<string>((resolve, reject) => {
    const s: Socket = connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' }, () => {
      s.write('PROXY TCP4 203.0.113.9 198.51.100.1 51000 443\r\nGET /v2/p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    });
    let out = '';
    s.on('data', (d) => { out += d; });
    s.on('close', () => resolve(out));
    s.on('error', reject);
  });
  const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Answer;
  assert.deepEqual(body.header, { version: 2, command: 'PROXY', family: 'TCP4', src: '203.0.113.9', dst: '198.51.100.1', srcPort: 51000, dstPort: 443 });
  assert.equal(body.xff, '203.0.113.9');
});

test('https backend: the header goes before the TLS handshake', async () => {
  const agent = keepAlive();
  const r1 = await get(agent, '/tls/a');
  const r2 = await get(agent, '/tls/b');
  assert.equal(r1.body.header.command, 'PROXY');
  assert.equal(r1.body.header.srcPort, r1.local);
  assert.equal(r2.body.conn, r1.body.conn);
  agent.destroy();
});

test('health checks of a PROXY backend send a header naming no one (v2 LOCAL), and the backend comes up', async () => {
  // startUnhealthy: only a passed check lets this request through.
  const deadline = Date.now() + 20_000;
  let answer: Answer | null = null;
  while (answer === null) {
    assert.ok(Date.now() < deadline, 'backend never came up');
    const agent = keepAlive();
    answer = await get(agent, '/checked').then((r) => r.body, () => null);
    agent.destroy();
    if (answer === null) await t.waitForLog(/"backend":"checked"/, { timeoutMs: 2000 }).catch(() => {});
  }
  assert.ok(checked.headers.some((h) => h.version === 2 && h.command === 'LOCAL'), JSON.stringify(checked.headers));
  assert.equal(answer.header.command, 'PROXY');
});

test('access log and metrics count requests through private connections', async () => {
  const agent = keepAlive();
  const from = t.output().length;
  const r = await get(agent, '/v1/logged');
  agent.destroy();
  const [line] = await t.waitForLog(/\{[^\n]*"path":"\/v1\/logged"[^\n]*\}/, { from });
  const entry = JSON.parse(line) as { status: number; backend: string; pool: string; bytes: number; client: string };
  assert.equal(entry.status, 200);
  assert.equal(entry.backend, 'one');
  assert.equal(entry.client, '127.0.0.1');
  assert.equal(entry.bytes, Buffer.byteLength(JSON.stringify(r.body)));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const text = await (await fetch(`${t.admin}/metrics`)).text();
    const count = text.split('\n').find((l) => l.startsWith('tandem_requests_total{') && l.includes('pool="one"') && l.includes('code="200"'));
    if (count !== undefined && Number(count.split(' ').at(-1)) >= 1) break;
    assert.ok(Date.now() < deadline, 'no tandem_requests_total for pool one');
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
});

test('a WebSocket upgrade to a PROXY pool opens its own connection with the header', async () => {
  const { port } = listener('web');
  const answer = await new Promise<string>((resolve, reject) => {
    const s: Socket = connect({ port, host: '127.0.0.1' }, () => {
      s.write('GET /v1/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    });
    let out = '';
    s.on('data', (d) => {
      out += d;
      if (out.includes('}')) s.destroy();
    });
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.setTimeout(20_000, () => s.destroy());
  });
  assert.match(answer, /^HTTP\/1\.1 101/);
  const body = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Answer;
  assert.equal(body.header.version, 1);
  assert.equal(body.header.family, 'TCP4');
  assert.equal(body.header.dstPort, port);
});

/** GET `path` as a stream of `session`. */
function stream(session: ClientHttp2Session, path: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':path': path });
    let text = '';
    s.on('data', (d) => { text += d; });
    s.on('end', () => resolve(JSON.parse(text) as Answer));
    s.on('error', reject);
    s.end();
  });
}

test('HTTP/2: the streams of one session share its private connections; another session gets its own', async () => {
  const { port } = listener('h2c');
  const one = h2connect(`http://127.0.0.1:${port}`);
  const two = h2connect(`http://127.0.0.1:${port}`);
  try {
    const a = await stream(one, '/v2/a');
    const b = await stream(one, '/v2/b');
    const c = await stream(two, '/v2/c');
    assert.equal(b.conn, a.conn, 'the next stream of a session reuses its upstream connection');
    assert.notEqual(c.conn, a.conn, 'two sessions never share an upstream connection');
    assert.equal(a.header.dstPort, port);
    assert.notEqual(a.header.srcPort, c.header.srcPort);
    one.close();
    await v2.closedSoon(a.conn);
    assert.ok(!v2.closed.has(c.conn));
  } finally {
    one.close();
    two.close();
  }
});

test('a reload that changes proxyProtocol gives even a kept-alive client new connections with the new header', async () => {
  const alice = keepAlive();
  const before = await get(alice, '/v1/r');
  assert.equal(before.body.header.version, 1);
  assert.match(await t.reload(yaml('v2')), /reloaded/);
  const after = await get(alice, '/v1/r');
  assert.equal(after.local, before.local, 'the same client connection');
  assert.equal(after.body.header.version, 2);
  assert.notEqual(after.body.conn, before.body.conn);
  await v1.closedSoon(before.body.conn);
  alice.destroy();
});
