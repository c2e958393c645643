import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { EventStream, pingInterval } from '../../src/admin/event-stream.ts';
import { createMetrics } from '../../src/admin/metrics.ts';
import { startAdmin } from '../../src/admin/server.ts';
import type { AdminServer } from '../../src/admin/server.ts';
import { startBackends, stopAll } from '../helpers/backends.ts';
import type { TestBackend } from '../helpers/backends.ts';
import { poolConfig, SseClient, TestRuntime } from './helpers.ts';
import type { SseEvent } from './helpers.ts';

describe('admin event stream', () => {
  let backends: TestBackend[];
  let runtime: TestRuntime;
  let admin: AdminServer;
  let url: string;
  const clients: SseClient[] = [];

  const connect = async (headers: Record<string, string> = {}, query = '') => {
    const c = await SseClient.connect(`${url}${query}`, headers);
    clients.push(c);
    return c;
  };

  before(async () => {
    backends = await startBackends(3, 'web');
  });

  after(async () => {
    await stopAll(backends);
  });

  beforeEach(async () => {
    runtime = new TestRuntime([
      poolConfig('web', [backends[0].config(), backends[1].config()]),
      poolConfig('api', [backends[2].config()]),
    ], { node: 'lb1', leaseDurationMs: 300 });
    runtime.vipViews = [
      { name: 'vip-a', address: '10.0.0.100/24', interface: 'eth0', state: 'MASTER', holder: 'lb1', epoch: 3, leaseRemainingMs: 250 },
      { name: 'vip-b', address: '10.0.0.101/24', interface: 'eth0', state: 'BACKUP', holder: 'lb2', epoch: 8, leaseRemainingMs: 0 },
    ];
    admin = await startAdmin(runtime, createMetrics({ defaultMetrics: false }), {
      host: '127.0.0.1', port: 0, token: null, authReads: false, events: { capacity: 5 },
    });
    url = `http://${admin.address}/api/v1/events`;
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await admin.close();
    await runtime.close();
  });

  const live = (e: SseEvent) => e.id !== null;

  it('answers with text/event-stream and starts with the state of every VIP, then every backend', async () => {
    const c = await connect();
    assert.equal(c.response?.statusCode, 200);
    assert.match(String(c.response?.headers['content-type']), /^text\/event-stream/);
    assert.equal(c.response?.headers['cache-control'], 'no-cache, no-transform');
    await c.waitFor((e) => e.event === 'backend' && (e.data as { backend: string }).backend === 'web3');
    const snapshot = c.events.filter((e) => e.event !== 'ping');
    assert.deepEqual(snapshot.map((e) => e.event), ['vip', 'vip', 'backend', 'backend', 'backend']);
    assert.ok(snapshot.every((e) => e.id === null), 'the snapshot is not part of the resumable history');
    assert.deepEqual(snapshot[0].data, {
      type: 'vip', vip: 'vip-a', state: 'MASTER', node: 'lb1', holder: 'lb1', epoch: 3,
      address: '10.0.0.100/24', interface: 'eth0', leaseRemaining: 250,
    });
    assert.deepEqual(snapshot[1].data, {
      type: 'vip', vip: 'vip-b', state: 'BACKUP', node: 'lb1', holder: 'lb2', epoch: 8,
      address: '10.0.0.101/24', interface: 'eth0', leaseRemaining: 0,
    });
    assert.deepEqual(snapshot.slice(2).map((e) => e.data), [
      { type: 'backend', pool: 'web', backend: 'web1', state: 'up', reason: 'current state' },
      { type: 'backend', pool: 'web', backend: 'web2', state: 'up', reason: 'current state' },
      { type: 'backend', pool: 'api', backend: 'web3', state: 'up', reason: 'current state' },
    ]);
  });

  it('shows a backend going down as soon as the pool publishes it, with increasing ids', async () => {
    const c = await connect();
    await c.waitFor((e) => e.event === 'backend');
    runtime.backend('web', 'web2').setHealthy(false, 'health check: connection refused');
    runtime.setVip('vip-b', 'MASTER', 'lb1');
    runtime.bus.publish({ type: 'reload', result: 'failure', errors: ['x.yaml:1:1: bad'] });
    await c.waitFor((e) => e.event === 'reload');
    const events = c.events.filter(live);
    assert.deepEqual(events.map((e) => [e.id, e.event]), [['1', 'backend'], ['2', 'vip'], ['3', 'reload']]);
    assert.deepEqual(events[0].data, { type: 'backend', pool: 'web', backend: 'web2', state: 'down', reason: 'health check: connection refused', previous: 'up' });
    assert.equal((events[1].data as { state: string }).state, 'MASTER');
    assert.deepEqual(events[2].data, { type: 'reload', result: 'failure', errors: ['x.yaml:1:1: bad'] });
  });

  it('replays exactly the missed events to a client that resumes with Last-Event-ID', async () => {
    const first = await connect();
    await first.waitFor((e) => e.event === 'backend');
    runtime.backend('web', 'web1').setAdmin('draining', 'admin');
    runtime.backend('web', 'web1').setAdmin('disabled', 'admin');
    await first.waitFor((e) => e.id === '2');
    first.close();

    runtime.backend('web', 'web1').setAdmin('enabled', 'admin');
    runtime.backend('api', 'web3').setHealthy(false, 'check failed');

    const again = await connect({ 'last-event-id': first.lastId ?? '' });
    await again.waitFor((e) => e.id === '4');
    const replayed = again.events.filter(live);
    assert.deepEqual(replayed.map((e) => e.id), ['3', '4']);
    assert.deepEqual(replayed.map((e) => (e.data as { state: string }).state), ['up', 'down']);
    // The snapshot comes first and already shows the current state.
    assert.equal(again.events.findIndex(live), 5);

    runtime.backend('api', 'web3').setHealthy(true, 'check passed');
    const next = await again.waitFor((e) => e.id === '5');
    assert.equal((next.data as { state: string }).state, 'up');
  });

  it('accepts the resume point as a lastEventId query parameter too', async () => {
    runtime.backend('web', 'web1').setAdmin('draining', 'admin');
    runtime.backend('web', 'web1').setAdmin('enabled', 'admin');
    const c = await connect({}, '?lastEventId=1');
    await c.waitFor((e) => e.id === '2');
    assert.deepEqual(c.events.filter(live).map((e) => e.id), ['2']);
  });

  it('replays nothing when the missed events have left the ring, and moves the cursor to now', async () => {
    const b = runtime.backend('web', 'web1');
    for (let i = 0; i < 4; i++) {
      b.setAdmin('draining', 'admin');
      b.setAdmin('enabled', 'admin');
    }
    // Ids 1..8 were published; the ring keeps 4..8, so a client at 2 has a gap.
    const gap = await connect({ 'last-event-id': '2' });
    await gap.waitFor((e) => e.event === 'backend');
    await waitUntil(() => gap.lastId === '8');
    assert.deepEqual(gap.events.filter(live), []);

    const edge = await connect({ 'last-event-id': '3' });
    await edge.waitFor((e) => e.id === '8');
    assert.deepEqual(edge.events.filter(live).map((e) => e.id), ['4', '5', '6', '7', '8']);

    const future = await connect({ 'last-event-id': '99' });
    await future.waitFor((e) => e.event === 'backend');
    await waitUntil(() => future.lastId === '8');
    assert.deepEqual(future.events.filter(live), []);
  });

  it('pings five times per lease so a follower can tell a quiet stream from a dead one, with the lease left of every VIP held here', async () => {
    const c = await connect();
    // The lease is 300 ms: a ping every 60 ms, so three arrive well within a second.
    await c.waitFor((e) => e.event === 'ping' && c.of('ping').length >= 3, 2000);
    const ping = c.of('ping')[0];
    assert.equal(ping.id, null);
    const data = ping.data as { time: number; leases: Record<string, number> };
    assert.equal(typeof data.time, 'number');
    // vip-a is held here (MASTER, 250 ms left); vip-b is held by lb2 and is not listed.
    assert.deepEqual(data.leases, { 'vip-a': 250 });
  });

  it('ends every open stream when the admin server closes', async () => {
    const a = await connect();
    const b = await connect();
    await a.waitFor((e) => e.event === 'backend');
    await b.waitFor((e) => e.event === 'backend');
    await admin.close();
    await a.waitForEnd();
    await b.waitForEnd();
    admin = { address: admin.address, close: async () => {} };
  });
});

describe('ping interval', () => {
  it('is a second without HA, a fifth of short leases, and never below 50 ms', () => {
    assert.equal(pingInterval(null), 1000);
    assert.equal(pingInterval(10_000), 1000);
    assert.equal(pingInterval(900), 180);
    assert.equal(pingInterval(60), 50);
  });
});

async function waitUntil(test: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!test()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('event stream backpressure', () => {
  it('cuts off a client that stops reading instead of buffering for it without bound', async () => {
    const runtime = new TestRuntime([], { leaseDurationMs: null });
    const stream = new EventStream(runtime, { capacity: 10, maxBufferedBytes: 64 * 1024 });
    const server = createServer((req, res) => stream.attach(req, res, undefined));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const socket = connect(port, '127.0.0.1');
    try {
      await new Promise<void>((resolve) => socket.once('connect', resolve));
      socket.write('GET /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n');
      socket.pause();
      await waitUntil(() => stream.clientCount() === 1);
      const big = 'x'.repeat(256 * 1024);
      let published = 0;
      // Loopback buffers take some megabytes before the server sees any backlog.
      while (stream.clientCount() === 1 && published < 400) {
        runtime.bus.publish({ type: 'reload', result: 'failure', errors: [big] });
        published++;
        await new Promise((r) => setImmediate(r));
      }
      assert.equal(stream.clientCount(), 0, `still streaming after ${published} events of 256 KiB`);
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      socket.resume();
      await closed;
    } finally {
      socket.destroy();
      stream.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
