// The etcd store on a real etcd (Debian's etcd-server on loopback ports): the lease store
// contract, then what is particular to it: a clear error when no endpoint answers,
// failover between endpoints, renewals that fail when etcd is gone, and a holder that
// fences itself on its own clock.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EtcdClient } from '../../src/ha/stores/etcd/client.ts';
import { EtcdStore } from '../../src/ha/stores/etcd/store.ts';
import { TandemError } from '../../src/errors.ts';
import { etcdSkip, startEtcd, type EtcdCluster } from '../helpers/etcd.ts';
import { leaseStoreContract, type ClusterOptions, type StoreCluster } from './lease-store.contract.ts';
import { Competitor, freePort, waitLease } from './support.ts';
import { messageLogger } from '../helpers/log.ts';

const skip = etcdSkip();
let shared: EtcdCluster | null = null;
let prefixes = 0;

async function etcd(): Promise<EtcdCluster> {
  shared ??= await startEtcd();
  return shared;
}

after(async () => {
  await shared?.close();
});

function newStore(endpoints: readonly string[], node: string, prefix: string, lease: number, renew: number, logs?: string[]): EtcdStore {
  const log = messageLogger(logs ?? [], `${node} `);
  return new EtcdStore({
    node,
    client: new EtcdClient({ endpoints, timeout: lease, log }),
    prefix,
    leaseDuration: lease,
    renewEvery: renew,
    handoverTimeout: 2 * lease,
    log,
  });
}

async function etcdCluster(opts: ClusterOptions): Promise<StoreCluster> {
  const e = await etcd();
  const prefix = `/test-${process.pid}-${++prefixes}`;
  const stores = new Map<string, EtcdStore>();
  for (const node of opts.nodes) {
    // etcd leases are whole seconds: the contract's 600 ms would be a 1 s lease on the
    // server and 600 ms on the holder's clock; ask for the lease etcd grants.
    const s = newStore(e.endpoints, node, prefix, Math.max(1000, opts.leaseDuration), opts.renewEvery);
    await s.start();
    stores.set(node, s);
  }
  return {
    store: (id) => stores.get(id)!,
    crash: (id) => stores.get(id)!.abandon(),
    close: async () => {
      await Promise.all([...stores.values()].map((s) => s.close()));
    },
  };
}

// etcd leases are whole seconds (1 s here), and etcd ends expired leases on a 500 ms
// loop, through a raft proposal that waits for a disk sync: on a busy machine (load 20 on
// 2 cores) that has been measured to add up to 1.2 s past the lease.
leaseStoreContract('etcd', etcdCluster, { lease: 1000, expiryLag: 1200, consecutiveEpochs: false }, { skip });

describe('etcd store', { skip }, () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  before(async () => {
    await etcd();
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c();
  });
  const started = async (s: EtcdStore) => {
    await s.start();
    cleanups.push(() => s.close());
    return s;
  };

  test('no endpoint answering is a clear error at start that names every endpoint', async () => {
    const dead = [`http://127.0.0.1:${await freePort()}`, `http://127.0.0.1:${await freePort()}`];
    const s = newStore(dead, 'lb1', '/nowhere', 1000, 200);
    const err = await s.start().then(() => null, (e: unknown) => e);
    assert.ok(err instanceof TandemError, String(err));
    for (const d of dead) assert.ok(err.message.includes(d), err.message);
    assert.match(err.message, /no endpoint answered/);
  });

  test('a dead first endpoint is logged with its address and the store works through the next', async () => {
    const e = await etcd();
    const dead = `http://127.0.0.1:${await freePort()}`;
    const logs: string[] = [];
    const s = await started(newStore([dead, ...e.endpoints], 'lb1', `/failover-${process.pid}`, 1000, 200, logs));
    const c = new Competitor(s, 'lb1', 'vip', { priority: 100, renewEvery: 200 });
    cleanups.push(() => c.halt());
    await waitLease(s, 'vip', (l) => l.holder === 'lb1' && l.serving, 3000);
    assert.ok(logs.some((l) => l.includes(`etcd ${dead}:`) && /ECONNREFUSED/.test(l)), logs.join('\n'));
  });

  test('with etcd auth on, the right user and password work and a wrong password is a clear startup error', async () => {
    const own = await startEtcd();
    cleanups.push(() => own.close());
    const gw = async (path: string, body: unknown) => {
      const res = await fetch(`${own.endpoints[0]}${path}`, { method: 'POST', body: JSON.stringify(body) });
      assert.equal(res.status, 200, `${path}: ${await res.clone().text()}`);
    };
    await gw('/v3/auth/user/add', { name: 'root', password: 'root-pass' });
    await gw('/v3/auth/role/add', { name: 'root' });
    await gw('/v3/auth/user/grant', { user: 'root', role: 'root' });
    await gw('/v3/auth/enable', {});
    const withAuth = (password: string) =>
      new EtcdStore({
        node: 'lb1',
        client: new EtcdClient({ endpoints: own.endpoints, auth: { user: 'root', password }, timeout: 1000 }),
        prefix: '/auth',
        leaseDuration: 1000,
        renewEvery: 200,
        handoverTimeout: 2000,
      });
    const wrong = withAuth('not-the-password');
    const err = await wrong.start().then(() => null, (e: unknown) => e);
    assert.ok(err instanceof TandemError, String(err));
    assert.match(err.message, /authentication as root refused/);
    const s = await started(withAuth('root-pass'));
    const c = new Competitor(s, 'lb1', 'vip', { priority: 100, renewEvery: 200 });
    cleanups.push(() => c.halt());
    const held = await waitLease(s, 'vip', (l) => l.holder === 'lb1' && l.serving, 3000);
    assert.ok(held.epoch > 0);
  });

  test('with etcd gone, renew rejects, and the holder gives the lease up on its own clock within the TTL', async () => {
    const own = await startEtcd();
    cleanups.push(() => own.close());
    const s = newStore(own.endpoints, 'lb1', '/fence', 1000, 200);
    await s.start();
    cleanups.push(() => s.abandon());
    const c = new Competitor(s, 'lb1', 'vip', { priority: 100, renewEvery: 200 });
    cleanups.push(() => c.halt());
    const held = await waitLease(s, 'vip', (l) => l.holder === 'lb1' && l.serving, 3000);
    assert.ok(held.remaining > 0 && held.remaining <= 1000);
    c.halt();
    const confirmed = await s.renew('vip', 'lb1');
    const t0 = performance.now();
    assert.equal(confirmed.holder, 'lb1');
    await own.members[0].kill('SIGKILL');
    await assert.rejects(s.renew('vip', 'lb1'), /no endpoint answered/);
    const lost = await waitLease(s, 'vip', (l) => l.holder === null, 2000, 'the lease to be given up');
    const after = performance.now() - t0;
    assert.equal(lost.holder, null);
    assert.ok(after <= 1000 + 50, `given up ${Math.round(after)} ms after the last confirmed renewal`);
  });
});
