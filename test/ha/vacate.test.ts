// A planned handover winds down the connections clients opened to the VIP before the
// VIP moves (src/dataplane/vacate.ts): idle keep-alive connections on the VIP's address
// are closed, a response in flight there goes out whole with `Connection: close` and the
// handover waits for it, and connections on the node's other addresses are untouched.
// One real tandem with a log-only hook, the VIP being 127.0.0.2 (on loopback already),
// the node's own address 127.0.0.1; the release comes through the admin API.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { freePort, sleep } from './support.ts';

const procs: TandemProcess[] = [];
const backends: TestBackend[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await Promise.all(backends.map((b) => b.stop()));
});

const VIP = '127.0.0.2';

/** `p`, or a failure naming `what` after `ms` (a deadline for a busy machine, not a figure). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** A raw keep-alive HTTP/1.1 client on one connection: sends a request, reads one whole answer. */
class RawClient {
  readonly socket: Socket;
  private buf = '';
  closed = false;
  readonly ended: Promise<void>;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.setEncoding('latin1');
    socket.on('data', (c: string) => (this.buf += c));
    this.ended = new Promise((r) => socket.once('close', () => {
      this.closed = true;
      r();
    }));
  }

  static open(host: string, port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect({ host, port }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  /** Sends GET `path`; resolves with the answer's head (lower-cased) and body once whole. */
  async get(path: string, ms = 20_000): Promise<{ head: string; body: string }> {
    this.buf = '';
    this.socket.write(`GET ${path} HTTP/1.1\r\nHost: vacate.test\r\n\r\n`);
    const deadline = performance.now() + ms;
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end >= 0) {
        const head = this.buf.slice(0, end).toLowerCase();
        const length = Number(/content-length: (\d+)/.exec(head)?.[1] ?? NaN);
        const body = this.buf.slice(end + 4);
        if (body.length >= length) return { head, body };
      }
      if (this.closed || performance.now() > deadline) throw new Error(`no whole answer (closed: ${this.closed}): ${JSON.stringify(this.buf)}`);
      await new Promise((r) => this.socket.once('data', r).once('close', r));
    }
  }
}

/** One tandem node holding vip-a (127.0.0.2, log-only hook) in front of one backend named `name`. */
async function holder(name: string): Promise<{ backend: TestBackend; t: TandemProcess; port: number }> {
  const backend = await startBackend({ name });
  backends.push(backend);
  const yaml = `
listeners:
  - { name: web, address: 0.0.0.0:0 }
routes:
  - { name: all, match: { pathPrefix: / }, pool: web }
pools:
  web:
    backends:
      - { name: ${name}, url: "${backend.url}" }
admin:
  address: 127.0.0.1:0
ha:
  store: peer
  nodes:
    lb1: { address: 127.0.0.1:${await freePort()} }
  lease: { duration: 600ms, renewEvery: 100ms }
  vips:
    - { name: vip-a, address: ${VIP}/8, interface: lo, priority: { lb1: 100 } }
`;
  const t = await startTandem(yaml, { args: ['--node', 'lb1', '--workers', '1'] });
  procs.push(t);
  await t.waitForLog(/vip-a MASTER/, { from: 0 });
  return { backend, t, port: Number(t.url.split(':').pop()) };
}

test('a planned handover closes idle keep-alive connections on the VIP, answers the busy one whole with Connection: close and waits for it; other addresses keep theirs', async () => {
  const { backend, t, port } = await holder('b1');

  // Keep-alive connections: idle on the VIP, idle on the node's own address, one on the
  // VIP that will be busy with a slow answer when the handover starts, and one on the VIP
  // its client keeps using.
  const idleVip = await RawClient.open(VIP, port);
  const idleOwn = await RawClient.open('127.0.0.1', port);
  const busyVip = await RawClient.open(VIP, port);
  const usedVip = await RawClient.open(VIP, port);
  for (const c of [idleVip, idleOwn, busyVip, usedVip]) {
    const first = await c.get('/warm');
    assert.doesNotMatch(first.head, /connection: close/, 'keep-alive before the handover');
  }

  backend.delayMs = (path) => (path === '/slow' ? 800 : 0);
  const seen = backend.requests;
  const slow = busyVip.get('/slow').then((a) => ({ ...a, at: performance.now() }));
  // The handover starts once the slow request is at the backend.
  for (const deadline = performance.now() + 20_000; backend.requests === seen;) {
    assert.ok(performance.now() < deadline, 'the slow request reached the backend');
    await sleep(5);
  }
  const from = t.output().length;
  const released = fetch(`${t.admin}/api/v1/vips/vip-a/release`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
  }).then(async (r) => ({ status: r.status, at: performance.now() }));

  // The connection in use: kept alive until the handover starts, then its next answer
  // says Connection: close and the connection ends after it, before the VIP moves.
  let last: { head: string; body: string };
  for (let n = 0; ; n++) {
    assert.ok(n < 2000, 'an answer on the VIP said Connection: close');
    last = await usedVip.get('/used');
    assert.match(last.head, /^http\/1\.1 200/);
    if (/connection: close/.test(last.head)) break;
    await sleep(10);
  }
  await within(usedVip.ended, 20_000, 'the connection in use ends after its Connection: close answer');
  // The idle one, never used again, is closed at the end of the handover's wait.
  await within(idleVip.ended, 20_000, 'the idle keep-alive connection on the VIP is closed');
  const answer = await slow;
  assert.match(answer.head, /^http\/1\.1 200/);
  assert.match(answer.head, /connection: close/, 'the busy connection is told to close');
  assert.ok(answer.body.length > 0 && answer.body.includes('b1'), 'the answer in flight is whole');
  await within(busyVip.ended, 20_000, 'the busy connection on the VIP closes after its answer');
  const r = await within(released, 20_000, 'the release answers');
  assert.equal(r.status, 200);
  assert.ok(r.at >= answer.at, 'the handover waited for the answer in flight');
  await t.waitForLog(/connections on 127\.0\.0\.2 wound down in \d+ ms/, { from });

  // The node's own address was never touched: the same connection answers, kept alive.
  assert.equal(idleOwn.closed, false);
  const again = await idleOwn.get('/again');
  assert.doesNotMatch(again.head, /connection: close/);
  idleOwn.socket.destroy();

  // Held again (the only node takes it back): connections on the VIP keep alive again.
  await t.waitForLog(/vip-a MASTER/, { from });
  const after = await RawClient.open(VIP, port);
  const kept = await after.get('/after');
  assert.doesNotMatch(kept.head, /connection: close/, 'keep-alive once the VIP is held again');
  after.socket.destroy();

  // The lease store's counters are scraped with the rest.
  const metrics = await (await fetch(`${t.admin}/metrics`)).text();
  assert.match(metrics, /^tandem_ha_store_events_total\{store="peer",event="sent"\} \d+$/m);
});

test('once the VIP is handed over, the address stays until the requests it received are answered, also on connections opened during the handover', async () => {
  const { backend, t, port } = await holder('b2');
  const reached = async (n: number) => {
    for (const deadline = performance.now() + 20_000; backend.requests < n;) {
      assert.ok(performance.now() < deadline, `request ${n} reached the backend`);
      await sleep(5);
    }
  };

  // The handover waits for the answer in flight on a connection open when it starts…
  backend.delayMs = (path) => (path === '/before' ? 800 : path === '/during' ? 1000 : 0);
  const before = await RawClient.open(VIP, port);
  const used = await RawClient.open(VIP, port);
  const first = before.get('/before');
  await reached(1);
  const from = t.output().length;
  const released = fetch(`${t.admin}/api/v1/vips/vip-a/release`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
  });
  // The handover has begun once an answer on the VIP says Connection: close.
  for (let n = 0; ; n++) {
    assert.ok(n < 2000, 'an answer on the VIP said Connection: close');
    if (/connection: close/.test((await used.get('/used')).head)) break;
    await sleep(10);
  }
  // …but not for a connection opened after it began, whose request is still at the
  // backend when the lease is gone: the address must stay until that answer is out.
  const during = await RawClient.open(VIP, port);
  const seen = backend.requests;
  const second = during.get('/during');
  await reached(seen + 1);
  const [a, b] = await Promise.all([first, second]);
  assert.match(a.head, /^http\/1\.1 200/);
  assert.match(b.head, /^http\/1\.1 200/);
  assert.match(b.head, /connection: close/, 'a connection opened during the handover is told to close');
  assert.equal(b.body, 'b2');
  assert.equal((await within(released, 20_000, 'the release answers')).status, 200);
  const line = await t.waitForLog(/answers in flight on 127\.0\.0\.2 sent in (\d+) ms; removing it/, { from });
  await t.waitForLog(/vip hook \(log-only\): vip-a BACKUP/, { from });
  const out = t.output().slice(from);
  const lingered = /answers in flight on 127\.0\.0\.2 sent in (\d+) ms/.exec(out)!;
  assert.ok(Number(lingered[1]) >= 100, `the address stayed for the answer still owed (${line[0]})`);
  const backup = out.search(/vip hook \(log-only\): vip-a BACKUP/);
  assert.ok(backup > lingered.index, 'the address is removed only after that');
  for (const c of [before, used, during]) c.socket.destroy();
});
