// startHa as `tandem run` uses it: two instances on loopback, active-active, the hook in
// log-only mode. Checks the wiring (store, electors, hooks, events, status, release, stop).

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { HaConfig, VipConfig } from '../../src/config/types.ts';
import { EventBus, type VipEvent } from '../../src/events.ts';
import { startHa, type HaHandle } from '../../src/ha/index.ts';
import { TandemError } from '../../src/errors.ts';
import { freePort, sleep } from './support.ts';
import { messageLogger, silentLogger } from '../helpers/log.ts';

const handles: HaHandle[] = [];
after(async () => {
  await Promise.all(handles.map((h) => h.stop()));
});

async function config(): Promise<HaConfig> {
  const vip = (name: string, address: string, priority: Record<string, number>): VipConfig => ({
    name, address, interface: 'eth0', priority, preempt: true, preemptDelay: 300, pools: [],
  });
  return {
    store: 'peer',
    etcd: null,
    nodes: [
      { id: 'lb1', host: '127.0.0.1', port: await freePort() },
      { id: 'lb2', host: '127.0.0.1', port: await freePort() },
    ],
    secret: 'start-ha-test-secret',
    multicastGroup: null,
    agent: false,
    leaseDuration: 600,
    renewEvery: 100,
    hook: null,
    hookTimeout: 2000,
    garpCount: 3,
    garpInterval: 200,
    garpRefresh: 60_000,
    vips: [vip('vip-a', '10.213.0.100/24', { lb1: 150, lb2: 100 }), vip('vip-b', '10.213.0.101/24', { lb1: 100, lb2: 150 })],
  };
}

async function until(what: string, test: () => boolean, ms = 5000): Promise<void> {
  const t0 = performance.now();
  while (!test()) {
    if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

test('active-active: each node holds its preferred VIP, takes both when the other stops, and gets its own back after the preempt delay', async () => {
  const cfg = await config();
  const logs: string[] = [];
  const events: VipEvent[] = [];
  const start = (node: string) => {
    const bus = new EventBus();
    bus.on('event', (e) => {
      if (e.type === 'vip' && node === 'lb1') events.push(e);
    });
    return startHa({ config: cfg, node, bus, ready: () => true, log: messageLogger(logs, `${node} `) });
  };
  const a = await start('lb1');
  handles.push(a);
  let b = await start('lb2');
  handles.push(b);
  const holders = (h: HaHandle) => Object.fromEntries(h.status().map((s) => [s.name, s.state]));
  await until('lb1 holds vip-a and lb2 holds vip-b', () => holders(a)['vip-a'] === 'MASTER' && holders(b)['vip-b'] === 'MASTER');
  assert.equal(holders(a)['vip-b'], 'BACKUP');
  assert.ok(logs.some((l) => l.startsWith('lb1 vip hook (log-only): vip-a MASTER 10.213.0.100/24 eth0')), 'log-only hook prints the transition');
  const st = a.status().find((s) => s.name === 'vip-a')!;
  assert.equal(st.holder, 'lb1');
  assert.equal(st.leaseDuration, 600);
  assert.ok(st.leaseRemainingMs > 0);

  await b.stop();
  assert.deepEqual(holders(a), { 'vip-a': 'MASTER', 'vip-b': 'MASTER' }, 'stop handed vip-b over before returning');
  assert.ok(events.some((e) => e.vip === 'vip-b' && e.state === 'MASTER' && e.holder === 'lb1'));

  b = await start('lb2');
  handles.push(b);
  await until('lb2 takes vip-b back', () => holders(b)['vip-b'] === 'MASTER', 3000);
  await until('lb1 gives vip-b up', () => holders(a)['vip-b'] === 'BACKUP');
  assert.equal(holders(a)['vip-a'], 'MASTER');

  const stats = a.storeStats();
  assert.ok(stats.accepted > 0 && stats.badMac === 0 && stats.replayed === 0, JSON.stringify(stats));
  assert.equal(await a.release('no-such-vip'), false);
  assert.equal(await a.release('vip-a'), true);
  assert.equal(holders(b)['vip-a'], 'MASTER');
});

test('an etcd store that no endpoint answers is a clear startup error naming the endpoints', async () => {
  const endpoint = `http://127.0.0.1:${await freePort()}`;
  const cfg = { ...(await config()), store: 'etcd' as const, leaseDuration: 1000, etcd: { endpoints: [endpoint], prefix: '/tandem', tls: null, auth: null } };
  await assert.rejects(
    startHa({ config: cfg, node: 'lb1', bus: new EventBus(), ready: () => true, log: silentLogger() }),
    (err: unknown) => err instanceof TandemError && err.code === 'TANDEM_ERR_LEASE_STORE' && err.message.includes(`cannot use etcd at ${endpoint}`) && /ECONNREFUSED/.test(err.message),
  );
});
