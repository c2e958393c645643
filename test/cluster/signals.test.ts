// Signals as service managers and terminals send them: to the whole process group, so
// workers get them too, and overlapping (a reload, then a stop).

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { singlePool } from '../helpers/config.ts';
import { freePort } from '../ha/support.ts';
import { connectionsTo, getFresh, groupMembers, startGrouped, startPeerBackend, until, type GroupedTandem, type PeerBackend } from './support.ts';

const started: GroupedTandem[] = [];
const backends: PeerBackend[] = [];
after(async () => {
  for (const t of started) {
    try {
      t.signalGroup('SIGKILL');
    } catch {
      // The group is gone already.
    }
  }
  await Promise.all(backends.map((b) => b.close()));
});

async function backend(): Promise<PeerBackend> {
  const b = await startPeerBackend('b1');
  backends.push(b);
  return b;
}

async function grouped(yaml: string, opts: Parameters<typeof startGrouped>[1] = {}): Promise<GroupedTandem> {
  const t = await startGrouped(yaml, opts);
  started.push(t);
  return t;
}

/** A VIP hook that touches no interface: it records each state and takes 1.5 s over STOP. */
const SLOW_STOP_HOOK = `#!/bin/sh
echo "$1" >> "$(dirname "$0")/hook.log"
if [ "$1" = STOP ]; then sleep 1.5; fi
exit 0
`;

function slowRequests(url: string, n: number): Promise<{ status: number; body: string }[]> {
  return Promise.all(Array.from({ length: n }, () => request(`${url}/`, { reset: true })
    .then(async (r) => ({ status: r.statusCode, body: await r.body.text() }))));
}

describe('cluster signals', () => {
  test('SIGTERM to the whole process group: workers keep accepting while the VIP is handed over, requests in flight finish, exit 0', async () => {
    const b1 = await backend();
    b1.delay = 1000;
    const yaml = singlePool([{ name: 'b1', url: b1.url }], {}, {
      workers: 2,
      ha: {
        nodes: { lb1: { address: `127.0.0.1:${await freePort()}` } },
        lease: { duration: '300ms', renewEvery: '100ms' },
        hook: 'hook.sh',
        hookTimeout: '5s',
        vips: [{ name: 'vip-a', address: '10.213.9.100/32', interface: 'lo', priority: { lb1: 100 } }],
      },
    });
    const t = await grouped(yaml, {
      args: ['--node', 'lb1'],
      setup: (dir) => {
        writeFileSync(join(dir, 'hook.sh'), SLOW_STOP_HOOK);
        chmodSync(join(dir, 'hook.sh'), 0o755);
      },
    });
    await t.waitForLog(/vip hook: vip-a MASTER .* done/);
    const workers = t.everyWorkerPid();
    assert.equal(workers.length, 2);

    const inFlight = slowRequests(t.url, 10);
    await until(() => workers.every((pid) => connectionsTo(pid, b1.port) > 0), 5000, 'requests in flight on both workers');
    b1.delay = 0;
    t.signalGroup('SIGTERM');

    // The STOP hook runs for 1.5 s: the VIP is still here, and so must the service be.
    const hookLog = join(t.dir, 'hook.log');
    await until(() => readFileSync(hookLog, 'utf8').includes('STOP'), 5000, 'the STOP hook to start');
    for (let i = 0; i < 5; i++) {
      const a = await getFresh(t.url);
      assert.deepEqual([a.status, a.backend], [200, 'b1'], 'a new connection during the handover is served');
    }
    assert.ok(groupMembers(t.pgid).some((pid) => workers.includes(pid)), 'the handover was still running');

    for (const r of await inFlight) assert.deepEqual([r.status, r.body], [200, 'b1']);
    assert.equal(await t.exited, 0);
    assert.match(t.output(), /SIGTERM: stopping/);
    assert.ok(t.output().indexOf('ha: stopped') >= 0, 'the VIP was released');
    await until(() => groupMembers(t.pgid).length === 0, 5000, 'every process of the group to exit');
  });

  test('a worker whose primary dies finishes its requests in flight, then exits on its own', async () => {
    const b1 = await backend();
    b1.delay = 1000;
    const t = await grouped(singlePool([{ name: 'b1', url: b1.url }], {}, { workers: 1 }));
    const [worker] = t.everyWorkerPid();
    const inFlight = slowRequests(t.url, 3);
    await until(() => connectionsTo(worker, b1.port) === 3, 5000, 'requests in flight');
    t.child.kill('SIGKILL');
    for (const r of await inFlight) assert.deepEqual([r.status, r.body], [200, 'b1']);
    await until(() => groupMembers(t.pgid).length === 0, 5000, 'the orphaned worker to exit');
  });

  /** Two workers, health checks in the primary, and a reload waiting in the file that wants three workers. */
  async function reloadPending(): Promise<GroupedTandem> {
    const b1 = await backend();
    const yaml = (workers: number) => singlePool([{ name: 'b1', url: b1.url }], { healthCheck: { path: '/healthz', interval: '100ms', timeout: '50ms' } }, { workers, shutdownTimeout: '4s' });
    const t = await grouped(yaml(2));
    writeFileSync(join(t.dir, 'tandem.yaml'), yaml(3));
    return t;
  }

  /** Exit 0 within the 4 s shutdownTimeout, and no process of the group left behind. */
  async function exitsCleanly(t: GroupedTandem): Promise<void> {
    const late = new Promise<'late'>((r) => setTimeout(r, 4000, 'late').unref());
    assert.equal(await Promise.race([t.exited, late]), 0, `the primary exits 0 within shutdownTimeout; output:\n${t.output()}`);
    await until(() => groupMembers(t.pgid).length === 0, 3000, `no process of the group left (workers ${t.everyWorkerPid()})`);
  }

  test('SIGTERM right after SIGHUP, with a reload that changes workers: exit 0 within shutdownTimeout, no worker left', async () => {
    const t = await reloadPending();
    t.child.kill('SIGHUP');
    t.child.kill('SIGTERM');
    await exitsCleanly(t);
  });

  test('SIGTERM while a worker the reload forked is still starting: exit 0 within shutdownTimeout, no worker left', async () => {
    const t = await reloadPending();
    const from = t.output().length;
    t.child.kill('SIGHUP');
    await t.waitForLog(/"msg":"worker 3 pid \d+ started"/, from);
    t.child.kill('SIGTERM');
    await exitsCleanly(t);
  });
});
