// The peer store: the lease store contract, then what is particular to it: HMAC
// authentication, replay protection, crash detection through the heartbeat connection,
// and split brain after a partition heals. Everything runs on loopback with real sockets;
// a partition is a real UDP/TCP relay between the nodes that the test can cut.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import type { HaNodeConfig } from '../../src/config/types.ts';
import { PeerStore, type PeerStoreOptions } from '../../src/ha/stores/peer/store.ts';
import { leaseStoreContract, type ClusterOptions, type StoreCluster } from './lease-store.contract.ts';
import { Competitor, freePort, heldPort, sleep, waitLease } from './support.ts';

const SECRET = 'a-test-secret-of-some-length';

async function nodesFor(ids: readonly string[]): Promise<HaNodeConfig[]> {
  const nodes: HaNodeConfig[] = [];
  for (const id of ids) nodes.push({ id, host: '127.0.0.1', port: await freePort() });
  return nodes;
}

function options(node: string, nodes: readonly HaNodeConfig[], lease: number, renew: number, secret = SECRET): PeerStoreOptions {
  return { node, nodes, secret, leaseDuration: lease, renewEvery: renew, handoverTimeout: lease * 2 };
}

async function peerCluster(opts: ClusterOptions): Promise<StoreCluster> {
  const nodes = await nodesFor(opts.nodes);
  const stores = new Map<string, PeerStore>();
  for (const n of nodes) {
    const s = new PeerStore(options(n.id, nodes, opts.leaseDuration, opts.renewEvery));
    await s.start();
    stores.set(n.id, s);
  }
  return {
    store: (id) => stores.get(id)!,
    crash: async (id) => {
      await stores.get(id)!.close();
    },
    close: async () => {
      await Promise.all([...stores.values()].map((s) => s.close()));
    },
  };
}

leaseStoreContract('peer', peerCluster);

describe('peer store', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });
  const started = async (o: PeerStoreOptions) => {
    const s = new PeerStore(o);
    await s.start();
    cleanups.push(() => s.close());
    return s;
  };
  const competitor = (s: PeerStore, node: string, key: string, priority: number, renewEvery: number, preempt = false) => {
    const c = new Competitor(s, node, key, { priority, renewEvery, preempt });
    cleanups.push(() => c.halt());
    return c;
  };

  test('adverts signed with another secret, or from a node not in ha.nodes, are dropped and counted', async () => {
    const nodes = await nodesFor(['lb1', 'lb2']);
    const b = await started(options('lb2', nodes, 600, 100));
    competitor(b, 'lb2', 'vip', 100, 100);
    await waitLease(b, 'vip', (l) => l.holder === 'lb2' && l.serving, 2000);
    // A forger that knows the address but not the secret claims the VIP with a high priority.
    const forger = await started(options('lb1', nodes, 600, 100, 'not-the-secret-at-all'));
    competitor(forger, 'lb1', 'vip', 250, 100, true);
    await sleep(800);
    assert.ok(b.stats.badMac > 0, 'bad MACs counted');
    const view = await b.acquire('vip', { node: 'lb2', priority: 100, preempt: false });
    assert.equal(view.holder, 'lb2');
    assert.equal(view.epoch, 1);

    const stranger = [...nodes, { id: 'intruder', host: '127.0.0.1', port: await freePort() }];
    const intruder = await started(options('intruder', stranger, 600, 100));
    competitor(intruder, 'intruder', 'vip', 250, 100, true);
    await sleep(500);
    assert.ok(b.stats.unknownNode > 0, 'unknown senders counted');
    assert.equal((await b.acquire('vip', { node: 'lb2', priority: 100, preempt: false })).holder, 'lb2');
  });

  test('a replayed advert is dropped, and a restarted sender with a new boot is heard again', async () => {
    // lb2's view of lb1 points at a spy socket that records what lb1 sends. The spy's
    // ports are bound before its address is handed out: no other test can take them.
    const spy = await heldPort();
    const spySocket = spy.udp;
    const nodes = [...await nodesFor(['lb1', 'lb2']), { id: 'spy', host: '127.0.0.1', port: spy.port }];
    const captured: Buffer[] = [];
    spySocket.on('message', (m) => {
      if (m.subarray(32).toString().includes('"n":"lb1"')) captured.push(m);
    });
    spy.tcp.on('connection', (s) => s.destroy());
    cleanups.push(() => { spySocket.close(); spy.tcp.close(); });

    const a = await started(options('lb1', nodes, 600, 100));
    const b = await started(options('lb2', nodes, 600, 100));
    const comp = competitor(a, 'lb1', 'vip', 200, 100);
    await waitLease(b, 'vip', (l) => l.holder === 'lb1' && l.serving, 2000);
    await sleep(300);
    assert.ok(captured.length > 0);
    const before = b.stats.replayed;
    for (const m of captured.slice(0, 5)) spySocket.send(m, nodes[1].port, nodes[1].host);
    await sleep(100);
    assert.equal(b.stats.replayed - before, 5, 'every replayed datagram is dropped and counted');

    // lb1 stops (a clean release), then comes back as a new process: a new boot.
    comp.halt();
    await a.release('vip', 'lb1');
    await a.close();
    await sleep(10);
    const a2 = await started(options('lb1', nodes, 600, 100));
    competitor(a2, 'lb1', 'vip', 200, 100);
    const back = await waitLease(b, 'vip', (l) => l.holder === 'lb1' && l.serving, 3000, 'restarted lb1 to hold');
    assert.equal(back.epoch, 2);
  });

  test('the death of the holder process is noticed at once, long before its lease would run out', async () => {
    const LEASE = 3000;
    const nodes = await nodesFor(['lb1', 'lb2']);
    const b = await started(options('lb2', nodes, LEASE, 100));
    competitor(b, 'lb2', 'vip', 100, 100);
    // lb1 runs in its own process so that SIGKILL ends it as a crash would.
    const child = spawn(process.execPath, ['--input-type=module', '-e', childHolder(nodes, LEASE)], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => void child.kill('SIGKILL'));
    await waitLease(b, 'vip', (l) => l.holder === 'lb1' && l.serving, 10_000, 'lb1 (child) to hold');
    await sleep(300);
    const t0 = performance.now();
    child.kill('SIGKILL');
    await waitLease(b, 'vip', (l) => l.holder === 'lb2', LEASE, 'lb2 to take over');
    const took = performance.now() - t0;
    assert.ok(took < LEASE / 4, `took over after ${Math.round(took)} ms with a ${LEASE} ms lease`);
  });

  test('after a partition heals, the lower priority yields within one advert interval and the winner moves past both epochs', async () => {
    const RENEW = 100;
    const real = await nodesFor(['lb1', 'lb2']);
    const relayFor = new Map<string, Relay>();
    for (const n of real) {
      const r = await relay(n);
      relayFor.set(n.id, r);
      cleanups.push(() => r.close());
    }
    // Each node reaches the other through a relay that the test can cut.
    const viewOf = (self: string) => real.map((n) => (n.id === self ? n : { ...n, port: relayFor.get(n.id)!.port }));
    const a = await started(options('lb1', viewOf('lb1'), 600, RENEW));
    const b = await started(options('lb2', viewOf('lb2'), 600, RENEW));
    competitor(a, 'lb1', 'vip', 200, RENEW);
    competitor(b, 'lb2', 'vip', 100, RENEW);
    const held = await waitLease(b, 'vip', (l) => l.holder === 'lb1' && l.serving, 3000);
    for (const r of relayFor.values()) r.cut = true;
    const bHolds = await waitLease(b, 'vip', (l) => l.holder === 'lb2' && l.serving, 3000, 'lb2 to take it during the partition');
    assert.equal(bHolds.epoch, held.epoch + 1);
    assert.equal((await a.acquire('vip', { node: 'lb1', priority: 200, preempt: false })).holder, 'lb1', 'both hold it while partitioned');
    const aViews: number[] = [];
    a.watch('vip', (l) => { if (l.holder === 'lb1') aViews.push(l.epoch); });
    const t0 = performance.now();
    for (const r of relayFor.values()) r.cut = false;
    const yielded = await waitLease(b, 'vip', (l) => l.holder === 'lb1', 2000, 'lb2 to yield');
    const healedAfter = performance.now() - t0;
    assert.ok(healedAfter <= 2 * RENEW, `resolved ${Math.round(healedAfter)} ms after healing`);
    assert.equal(yielded.holder, 'lb1');
    await waitLease(b, 'vip', (l) => l.holder === 'lb1' && l.epoch > bHolds.epoch, 2 * RENEW, "the winner's epoch to pass the loser's");
    assert.ok(aViews.some((e) => e > bHolds.epoch), 'the winner saw its own epoch move (and re-announces)');
    assert.equal((await b.acquire('vip', { node: 'lb2', priority: 100, preempt: false })).holder, 'lb1');
  });
});

interface Relay {
  port: number;
  cut: boolean;
  close(): void;
}

/** Forwards UDP datagrams and TCP connections to `to`, except while `cut`. */
async function relay(to: HaNodeConfig): Promise<Relay> {
  const port = await freePort();
  const udp = dgram.createSocket('udp4');
  const conns = new Set<net.Socket>();
  const state: Relay = {
    port,
    cut: false,
    close: () => {
      udp.close();
      tcp.close();
      for (const c of conns) c.destroy();
    },
  };
  udp.on('message', (m) => {
    if (!state.cut) udp.send(m, to.port, to.host);
  });
  await new Promise<void>((r) => udp.bind(port, '127.0.0.1', () => r()));
  // TCP is piped, not cut: a partition silences packets, it does not close connections.
  const tcp = net.createServer((c) => {
    const u = net.connect(to.port, to.host);
    conns.add(c).add(u);
    c.pipe(u).pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise<void>((r) => tcp.listen(port, '127.0.0.1', () => r()));
  return state;
}

/** Source of a child process that holds 'vip' as lb1 until killed. */
function childHolder(nodes: HaNodeConfig[], lease: number): string {
  const storeUrl = new URL('../../src/ha/stores/peer/store.ts', import.meta.url).href;
  return `
    import { PeerStore } from ${JSON.stringify(storeUrl)};
    const s = new PeerStore({ node: 'lb1', nodes: ${JSON.stringify(nodes)}, secret: ${JSON.stringify(SECRET)}, leaseDuration: ${lease}, renewEvery: 100, handoverTimeout: ${lease * 2} });
    await s.start();
    setInterval(async () => {
      const l = await s.acquire('vip', { node: 'lb1', priority: 200, preempt: true });
      if (l.holder === 'lb1') await s.renew('vip', 'lb1');
    }, 100);
  `;
}
