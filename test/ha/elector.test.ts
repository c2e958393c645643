// Electors over real peer stores on loopback, with a real hook script that records when
// each hook run started and ended. The order of those lines is what make-before-break
// and the other promises are about.

import { after, afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HaNodeConfig, VipConfig } from '../../src/config/types.ts';
import { EventBus, type VipEvent } from '../../src/events.ts';
import { Elector } from '../../src/ha/elector.ts';
import { VipHook } from '../../src/ha/hook.ts';
import type { Claim, Lease, LeaseStore } from '../../src/ha/lease-store.ts';
import { PeerStore } from '../../src/ha/stores/peer/store.ts';
import { freePort, sleep } from './support.ts';
import { silentLogger } from '../helpers/log.ts';

const HOOK = new URL('./fixtures/record-hook.sh', import.meta.url).pathname;
const LEASE = 600;
const RENEW = 100;

interface HookLine {
  at: bigint;
  phase: 'start' | 'end' | 'fail';
  state: string;
  node: string;
  epoch: number;
}

interface Node {
  readonly id: string;
  readonly store: PeerStore;
  readonly elector: Elector;
  readonly events: VipEvent[];
  readyFlag: { ready: boolean };
  aborts: number[];
}

describe('elector', () => {
  let dir = '';
  let hookLog = '';
  const running: Node[] = [];
  const stores: PeerStore[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tandem-elector-'));
    hookLog = join(dir, 'hooks.log');
    writeFileSync(hookLog, '');
    process.env.HOOK_LOG = hookLog;
    delete process.env.HOOK_DELAY;
    delete process.env.HOOK_FAIL;
    delete process.env.HOOK_FAIL_TIMES;
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((n) => n.elector.stop().catch(() => {})));
    await Promise.all(stores.splice(0).map((s) => s.close()));
    rmSync(dir, { recursive: true, force: true });
  });
  after(() => {
    delete process.env.HOOK_LOG;
  });

  const hooks = (): HookLine[] =>
    readFileSync(hookLog, 'utf8').trim().split('\n').filter(Boolean).map((l) => {
      const [at, phase, state, , node, epoch] = l.split(' ');
      return { at: BigInt(at), phase: phase as HookLine['phase'], state, node, epoch: Number(epoch) };
    });

  const vipOf = (over: Partial<VipConfig> = {}): VipConfig => ({
    name: 'vip-a', address: '10.213.0.100/24', interface: 'eth0', priority: { lb1: 150, lb2: 100 },
    preempt: true, preemptDelay: 0, pools: [], ...over,
  });

  async function cluster(): Promise<HaNodeConfig[]> {
    return [
      { id: 'lb1', host: '127.0.0.1', port: await freePort() },
      { id: 'lb2', host: '127.0.0.1', port: await freePort() },
    ];
  }

  async function startNode(id: string, nodes: HaNodeConfig[], vip: VipConfig, opts: { wrap?: (s: LeaseStore) => LeaseStore; stopRetryFor?: number } = {}): Promise<Node> {
    const store = new PeerStore({ node: id, nodes, secret: 'elector-test-secret', leaseDuration: LEASE, renewEvery: RENEW, handoverTimeout: LEASE + 2000 });
    await store.start();
    stores.push(store);
    const bus = new EventBus();
    const events: VipEvent[] = [];
    bus.on('event', (e) => {
      if (e.type === 'vip') events.push(e);
    });
    const readyFlag = { ready: true };
    const aborts: number[] = [];
    const hook = new VipHook({
      path: HOOK, node: id, vip: vip.name, address: vip.address, interface: vip.interface,
      timeout: 5000, garpCount: 3, garpInterval: 200, garpRefresh: 0, log: silentLogger(),
    });
    const elector = new Elector({
      vip, node: id, store: opts.wrap ? opts.wrap(store) : store, hook, bus, ready: () => readyFlag.ready,
      leaseDuration: LEASE, renewEvery: RENEW, handoverTimeout: LEASE + 2000, stopRetryFor: opts.stopRetryFor, log: silentLogger(),
      lead: (signal) => signal.addEventListener('abort', () => aborts.push(performance.now())),
    });
    const node: Node = { id, store, elector, events, readyFlag, aborts };
    running.push(node);
    await elector.start();
    return node;
  }

  async function until(what: string, test: () => boolean, ms = 5000): Promise<number> {
    const t0 = performance.now();
    while (!test()) {
      if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
      await sleep(10);
    }
    return performance.now() - t0;
  }

  const stateOf = (n: Node) => n.elector.status().state;
  /** Hook lines of one node and state after the defensive removal at start (epoch 0). */
  const runsOf = (node: string, state: string) => hooks().filter((l) => l.node === node && l.state === state && l.epoch > 0);

  test('the higher priority becomes MASTER, the other BACKUP, and every transition is published', async () => {
    const nodes = await cluster();
    const a = await startNode('lb1', nodes, vipOf());
    const b = await startNode('lb2', nodes, vipOf());
    await until('lb1 MASTER', () => stateOf(a) === 'MASTER');
    await sleep(3 * RENEW);
    assert.equal(stateOf(b), 'BACKUP');
    assert.equal(b.elector.status().holder, 'lb1');
    assert.equal(b.elector.status().leaseRemainingMs, 0, 'a standby reports no lease of its own');
    assert.ok(a.elector.status().leaseRemainingMs > 0, 'the holder reports its lease left');
    assert.deepEqual(a.events.map((e) => e.state), ['BACKUP', 'MASTER']);
    const master = a.events[1];
    assert.equal(master.holder, 'lb1');
    assert.equal(master.epoch, 1);
    assert.equal(master.address, '10.213.0.100/24');
    assert.ok(b.events.some((e) => e.state === 'BACKUP' && e.holder === 'lb1'), 'lb2 published the holder it sees');
    // The defensive BACKUP ran on both before either competed.
    for (const id of ['lb1', 'lb2']) {
      const first = hooks().filter((l) => l.node === id)[0];
      assert.equal(`${first.state} ${first.epoch}`, 'BACKUP 0', `${id} removed the VIP before competing`);
    }
  });

  test('a node that stops being ready goes to FAULT and hands the VIP over, and competes again when ready', async () => {
    const nodes = await cluster();
    const vip = vipOf({ preemptDelay: 300 });
    const a = await startNode('lb1', nodes, vip);
    const b = await startNode('lb2', nodes, vip);
    await until('lb1 MASTER', () => stateOf(a) === 'MASTER');
    // A handover needs a candidate to hand over to: lb1 must have heard lb2 compete
    // (adverts accepted since lb2 stood by), or it can only release.
    await until('lb2 BACKUP', () => stateOf(b) === 'BACKUP');
    const heard = a.store.stats.accepted;
    await until('lb1 heard lb2 compete', () => a.store.stats.accepted >= heard + 2);
    a.readyFlag.ready = false;
    await until('lb2 MASTER', () => stateOf(b) === 'MASTER', 2 * LEASE);
    await until('lb1 FAULT', () => stateOf(a) === 'FAULT');
    await until('the FAULT hook', () => hooks().some((l) => l.node === 'lb1' && l.state === 'FAULT'));
    await until('lb2\'s MASTER hook done', () => hooks().some((l) => l.node === 'lb2' && l.state === 'MASTER' && l.phase === 'end'));
    const lines = hooks();
    const bMaster = lines.find((l) => l.node === 'lb2' && l.state === 'MASTER' && l.phase === 'end')!;
    const aFault = lines.find((l) => l.node === 'lb1' && l.state === 'FAULT' && l.phase === 'start')!;
    assert.ok(bMaster.at < aFault.at, `lb2 had the VIP up before lb1 removed it: ${JSON.stringify(lines, (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`);
    a.readyFlag.ready = true;
    const back = await until('lb1 MASTER again', () => stateOf(a) === 'MASTER', 4000);
    assert.ok(back >= 300, `preempted only after the delay (${Math.round(back)} ms)`);
    await until('lb2 BACKUP', () => stateOf(b) === 'BACKUP');
    assert.ok(a.events.map((e) => e.state).join(',').startsWith('BACKUP,MASTER,FAULT,BACKUP,MASTER'), a.events.map((e) => e.state).join(','));
  });

  test('a preferred node that comes back takes its VIP only after the preempt delay, make-before-break', async () => {
    const nodes = await cluster();
    const vip = vipOf({ preemptDelay: 800 });
    process.env.HOOK_DELAY = '0.15';
    const b = await startNode('lb2', nodes, vip);
    await until('lb2 MASTER', () => stateOf(b) === 'MASTER', 3000);
    const t0 = performance.now();
    const a = await startNode('lb1', nodes, vip);
    await until('lb1 MASTER', () => stateOf(a) === 'MASTER', 4000);
    const took = performance.now() - t0;
    assert.ok(took >= 800, `lb1 waited for the preempt delay (took ${Math.round(took)} ms)`);
    await until('lb2 BACKUP', () => stateOf(b) === 'BACKUP');
    await sleep(300);
    const lines = hooks();
    const aMasterEnd = lines.find((l) => l.node === 'lb1' && l.state === 'MASTER' && l.phase === 'end')!;
    const bBackupStart = lines.filter((l) => l.node === 'lb2' && l.state === 'BACKUP' && l.phase === 'start').at(-1)!;
    assert.ok(aMasterEnd.at < bBackupStart.at, 'lb1 had the VIP up before lb2 removed it');
    assert.equal(aMasterEnd.epoch, 2);
  });

  test('without preempt, a preferred node that comes back stays BACKUP', async () => {
    const nodes = await cluster();
    const vip = vipOf({ preempt: false });
    const b = await startNode('lb2', nodes, vip);
    await until('lb2 MASTER', () => stateOf(b) === 'MASTER', 3000);
    const a = await startNode('lb1', nodes, vip);
    await sleep(4 * LEASE);
    assert.equal(stateOf(a), 'BACKUP');
    assert.equal(stateOf(b), 'MASTER');
  });

  test('a MASTER hook that fails puts the node in FAULT, and the other node takes the VIP', async () => {
    const nodes = await cluster();
    process.env.HOOK_FAIL = 'MASTER@lb1';
    const a = await startNode('lb1', nodes, vipOf());
    const b = await startNode('lb2', nodes, vipOf());
    await until('lb2 MASTER', () => stateOf(b) === 'MASTER', 4000);
    assert.ok(a.events.some((e) => e.state === 'FAULT'), 'lb1 went to FAULT');
    assert.ok(hooks().some((l) => l.node === 'lb1' && l.phase === 'fail' && l.state === 'MASTER'));
    // lb1 retries after its fault hold; with the hook still failing it never holds.
    await sleep(3 * LEASE);
    assert.equal(stateOf(b), 'MASTER');
  });

  test('release hands the VIP over make-before-break and answers false where the VIP is not held', async () => {
    const nodes = await cluster();
    process.env.HOOK_DELAY = '0.1';
    const vip = vipOf({ preemptDelay: 60_000 });
    const a = await startNode('lb1', nodes, vip);
    const b = await startNode('lb2', nodes, vip);
    await until('lb1 MASTER', () => stateOf(a) === 'MASTER', 3000);
    await until('lb2 to see lb1 hold', () => b.elector.status().holder === 'lb1');
    await sleep(2 * RENEW);
    assert.equal(await b.elector.release(), false);
    assert.equal(await a.elector.release(), true);
    assert.equal(stateOf(b), 'MASTER', 'the successor serves once release returns');
    assert.equal(stateOf(a), 'BACKUP');
    const lines = hooks();
    const bMasterEnd = lines.find((l) => l.node === 'lb2' && l.state === 'MASTER' && l.phase === 'end')!;
    const aBackup = lines.filter((l) => l.node === 'lb1' && l.state === 'BACKUP' && l.phase === 'start').at(-1)!;
    assert.ok(bMasterEnd.at < aBackup.at, 'lb2 had the VIP up before lb1 removed it');
    // Stop likewise: lb2 hands it back to lb1 and runs STOP.
    await b.elector.stop();
    assert.equal(stateOf(a), 'MASTER');
    assert.equal(stateOf(b), 'STOP');
    assert.equal(b.events.at(-1)?.state, 'STOP');
  });

  test('leader work is aborted when renewals stop being confirmed, before the lease can be taken elsewhere', async () => {
    const nodes = await cluster();
    let broken = false;
    const breakable = (s: LeaseStore): LeaseStore => ({
      acquire: (k: string, c: Claim) => (broken ? Promise.reject(new Error('store unreachable')) : s.acquire(k, c)),
      renew: (k: string, n: string): Promise<Lease> => (broken ? Promise.reject(new Error('store unreachable')) : s.renew(k, n)),
      release: (k: string, n: string) => (broken ? Promise.reject(new Error('store unreachable')) : s.release(k, n)),
      watch: (k, l) => s.watch(k, l),
    });
    const a = await startNode('lb1', nodes, vipOf(), { wrap: breakable });
    const b = await startNode('lb2', nodes, vipOf());
    await until('lb1 MASTER', () => stateOf(a) === 'MASTER', 3000);
    await sleep(2 * RENEW);
    const t0 = performance.now();
    broken = true;
    await until('lb2 MASTER', () => stateOf(b) === 'MASTER', 3 * LEASE);
    const takenAt = performance.now();
    assert.equal(a.aborts.length, 1, 'leader work was aborted once');
    assert.ok(a.aborts[0] < takenAt, 'aborted before the lease was taken elsewhere');
    assert.ok(a.aborts[0] - t0 <= LEASE / 2 + RENEW, `aborted ${Math.round(a.aborts[0] - t0)} ms after renewals failed`);
    assert.ok(a.elector.status().renewFailures > 0);
    assert.notEqual(stateOf(a), 'MASTER');
  });
  test('a BACKUP hook that fails after a handover runs again with growing pauses until the VIP is off this host', async () => {
    const nodes = await cluster();
    const vip = vipOf({ preemptDelay: 60_000 });
    const a = await startNode('lb1', nodes, vip);
    const b = await startNode('lb2', nodes, vip);
    await until('lb1 MASTER', () => stateOf(a) === 'MASTER', 3000);
    await until('lb2 to see lb1 hold', () => b.elector.status().holder === 'lb1');
    await sleep(2 * RENEW);
    process.env.HOOK_FAIL = 'BACKUP@lb1';
    process.env.HOOK_FAIL_TIMES = '3';
    assert.equal(await a.elector.release(), true);
    assert.equal(stateOf(b), 'MASTER');
    await until('the BACKUP hook to succeed on lb1', () => runsOf('lb1', 'BACKUP').some((l) => l.phase === 'end'), 4000);
    const runs = runsOf('lb1', 'BACKUP');
    assert.deepEqual(runs.filter((l) => l.phase !== 'start').map((l) => l.phase), ['fail', 'fail', 'fail', 'end']);
    const starts = runs.filter((l) => l.phase === 'start').map((l) => Number(l.at / 1_000_000n));
    const pauses = starts.slice(1).map((t, i) => t - starts[i]);
    assert.ok(pauses.every((p) => p >= 90), `pauses between runs: ${pauses.join(', ')} ms`);
    assert.ok(pauses[2] > pauses[0], `pauses grow: ${pauses.join(', ')} ms`);
    assert.equal(stateOf(a), 'BACKUP');
  });

  test('a BACKUP hook that keeps failing is no longer run once the node holds the VIP again', async () => {
    const nodes = await cluster();
    const vip = vipOf({ preemptDelay: 60_000 });
    const a = await startNode('lb1', nodes, vip);
    const b = await startNode('lb2', nodes, vip);
    await until('lb1 MASTER', () => stateOf(a) === 'MASTER', 3000);
    await until('lb2 to see lb1 hold', () => b.elector.status().holder === 'lb1');
    await sleep(2 * RENEW);
    process.env.HOOK_FAIL = 'BACKUP@lb1';
    assert.equal(await a.elector.release(), true);
    await until('a retry of the BACKUP hook', () => runsOf('lb1', 'BACKUP').filter((l) => l.phase === 'fail').length >= 2, 2000);
    await b.elector.stop();
    await until('lb1 MASTER again', () => stateOf(a) === 'MASTER', 3000);
    const masterAgain = runsOf('lb1', 'MASTER').filter((l) => l.phase === 'start').at(-1)!;
    await sleep(1500);
    const later = runsOf('lb1', 'BACKUP').filter((l) => l.phase === 'start' && l.at > masterAgain.at);
    assert.deepEqual(later, [], 'no BACKUP run after the node became MASTER again');
    assert.equal(stateOf(a), 'MASTER');
  });

  test('stop runs a failed STOP hook again and returns only once it succeeded', async () => {
    const nodes = await cluster();
    const a = await startNode('lb1', nodes, vipOf());
    await until('lb1 MASTER', () => stateOf(a) === 'MASTER', 3000);
    process.env.HOOK_FAIL = 'STOP@lb1';
    process.env.HOOK_FAIL_TIMES = '2';
    await a.elector.stop();
    assert.deepEqual(runsOf('lb1', 'STOP').filter((l) => l.phase !== 'start').map((l) => l.phase), ['fail', 'fail', 'end']);
    assert.equal(stateOf(a), 'STOP');
  });

  test('stop gives up on a STOP hook that keeps failing once its retry time has passed', async () => {
    const nodes = await cluster();
    const a = await startNode('lb1', nodes, vipOf(), { stopRetryFor: 500 });
    await until('lb1 MASTER', () => stateOf(a) === 'MASTER', 3000);
    process.env.HOOK_FAIL = 'STOP@lb1';
    const t0 = performance.now();
    await a.elector.stop();
    const took = performance.now() - t0;
    const runs = runsOf('lb1', 'STOP').filter((l) => l.phase === 'start').length;
    // Retried, and given up once the retry time has passed: at most one more run (bounded
    // by the hook's own timeout) may be under way then, however slow the machine.
    assert.ok(runs >= 2, `the STOP hook ran ${runs} times`);
    assert.ok(took < 500 + 5000, `stop returned after ${Math.round(took)} ms`);
    await sleep(800);
    assert.equal(runsOf('lb1', 'STOP').filter((l) => l.phase === 'start').length, runs, 'no STOP run after stop returned');
  });
});
