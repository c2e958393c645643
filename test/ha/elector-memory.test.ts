// The elector on the in-memory store, with a clock the test moves by hand: no UDP, no
// sleeps, the same policy as in production. Each test moves time in small steps and
// reads what the electors published and when (on that clock). Hooks are the real
// runner: log-only where the hook does not matter, a real script where it does.

import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VipConfig } from '../../src/config/types.ts';
import { EventBus } from '../../src/events.ts';
import { Elector } from '../../src/ha/elector.ts';
import { VipHook } from '../../src/ha/hook.ts';
import { MemoryMedium, MemoryStore } from '../../src/ha/stores/memory/store.ts';
import { ManualClock } from './manual-clock.ts';
import { sleep } from './support.ts';
import { silentLogger } from '../helpers/log.ts';

const LEASE = 1000;
const RENEW = 100;
const HANDOVER = LEASE + 2000;
const FIXTURES = new URL('./fixtures/', import.meta.url).pathname;

interface Published {
  readonly node: string;
  readonly state: string;
  readonly holder: string | null;
  readonly epoch: number;
  /** Clock time it was published. */
  readonly at: number;
}

interface Node {
  readonly id: string;
  readonly store: MemoryStore;
  readonly elector: Elector;
  readonly ready: { value: boolean };
  /** Clock times the leader signal aborted. */
  readonly aborts: number[];
}

describe('elector on the memory store, on a hand-moved clock', () => {
  let clock = new ManualClock();
  let medium = new MemoryMedium(clock);
  let published: Published[] = [];
  let nodes: Node[] = [];
  const dirs: string[] = [];
  /** Environment of the hook scripts, kept until the electors stopped (their STOP hooks use it). */
  const env: string[] = [];
  const setEnv = (name: string, value: string) => {
    process.env[name] = value;
    env.push(name);
  };

  const fresh = () => {
    clock = new ManualClock();
    medium = new MemoryMedium(clock);
    published = [];
    nodes = [];
  };
  /** fresh(), and a directory for a hook script's files, removed after the test. */
  const freshWithDir = () => {
    fresh();
    const dir = mkdtempSync(join(tmpdir(), 'tandem-elector-memory-'));
    dirs.push(dir);
    return dir;
  };
  afterEach(async () => {
    for (const n of nodes) n.store.cut(false);
    const stopping = Promise.all(nodes.map((n) => n.elector.stop().catch(() => {})));
    // stop() hands over and waits on the clock: move it until every elector stopped.
    let stopped = false;
    void stopping.then(() => (stopped = true));
    for (let i = 0; i < 1000 && !stopped; i++) await clock.advance(RENEW);
    await stopping;
    for (const n of nodes) n.store.close();
    for (const name of env.splice(0)) delete process.env[name];
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  const vipOf = (over: Partial<VipConfig> = {}): VipConfig => ({
    name: 'vip-a', address: '10.213.0.100/24', interface: 'eth0', priority: { lb1: 150, lb2: 100 },
    preempt: true, preemptDelay: 0, pools: [], ...over,
  });

  async function startNode(id: string, vip: VipConfig, hookPath: string | null = null): Promise<Node> {
    const bus = new EventBus();
    bus.on('event', (e) => {
      if (e.type === 'vip') published.push({ node: id, state: e.state, holder: e.holder, epoch: e.epoch, at: clock.now() });
    });
    const ready = { value: true };
    const aborts: number[] = [];
    let elector: Elector | null = null;
    const store = new MemoryStore({
      node: id, medium, leaseDuration: LEASE, renewEvery: RENEW, handoverTimeout: HANDOVER,
      beforeOffer: () => elector?.departure.preempted() ?? Promise.resolve(),
    });
    const hook = new VipHook({
      path: hookPath, node: id, vip: vip.name, address: vip.address, interface: vip.interface,
      timeout: 30_000, garpCount: 1, garpInterval: 10, garpRefresh: 0, log: silentLogger(),
    });
    elector = new Elector({
      vip, node: id, store, hook, bus, ready: () => ready.value, clock,
      leaseDuration: LEASE, renewEvery: RENEW, handoverTimeout: HANDOVER, log: silentLogger(),
      lead: (signal) => signal.addEventListener('abort', () => aborts.push(clock.now())),
    });
    const node: Node = { id, store, elector, ready, aborts };
    nodes.push(node);
    await elector.start();
    return node;
  }

  /** Moves the clock in steps of 10 ms until `done()`; returns the clock time then. Fails after `limit` ms of clock time. */
  async function runUntil(what: string, done: () => boolean, limit = 10 * LEASE): Promise<number> {
    const t0 = clock.now();
    while (!done()) {
      if (clock.now() - t0 > limit) throw new Error(`${what}: not within ${limit} ms of clock time`);
      await clock.advance(10);
    }
    return clock.now();
  }

  /** Waits in real time (the clock stands still) while a real hook process runs. */
  async function waitReal(what: string, done: () => boolean, ms = 10_000): Promise<void> {
    const t0 = performance.now();
    while (!done()) {
      if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
      await sleep(5);
    }
  }

  const stateOf = (n: Node) => n.elector.status().state;

  /** A fresh medium, lb1 and lb2 started, lb1 holding the VIP for a few renewals. */
  async function pairWithLb1Master(vip: VipConfig): Promise<[Node, Node]> {
    fresh();
    const a = await startNode('lb1', vip);
    const b = await startNode('lb2', vip);
    await runUntil('lb1 MASTER', () => stateOf(a) === 'MASTER');
    await clock.advance(3 * RENEW);
    return [a, b];
  }
  const first = (node: string, state: string, after = 0) => published.find((p) => p.node === node && p.state === state && p.at >= after && (state !== 'MASTER' || p.holder === node));

  test('a lone node takes the free VIP one renew interval after it starts, at epoch 1', async () => {
    fresh();
    const t0 = clock.now();
    const a = await startNode('lb1', vipOf());
    const at = await runUntil('lb1 MASTER', () => stateOf(a) === 'MASTER');
    assert.ok(at - t0 >= RENEW && at - t0 <= 2 * RENEW + 10, `took it after ${at - t0} ms`);
    assert.deepEqual(published.map((p) => `${p.state} ${p.epoch}`), ['BACKUP 0', 'MASTER 1']);
    assert.ok(a.elector.status().leaseRemainingMs > LEASE - 2 * RENEW);
    // It keeps it: renewals go on as the clock moves.
    await clock.advance(5 * LEASE);
    assert.equal(stateOf(a), 'MASTER');
    assert.equal(a.elector.status().epoch, 1);
  });

  test('a higher priority takes the VIP over only after its preempt delay, and the old holder lets go once it serves', async () => {
    fresh();
    const vip = vipOf({ preemptDelay: 2000 });
    const b = await startNode('lb2', vip);
    await runUntil('lb2 MASTER', () => stateOf(b) === 'MASTER');
    const t0 = clock.now();
    const a = await startNode('lb1', vip);
    await clock.advance(1900);
    assert.equal(stateOf(b), 'MASTER', 'lb2 keeps it during the preempt delay');
    assert.equal(stateOf(a), 'BACKUP');
    const took = await runUntil('lb1 MASTER', () => stateOf(a) === 'MASTER' && stateOf(b) === 'BACKUP');
    assert.ok(took - t0 >= 2000, `preempted ${took - t0} ms after lb1 started`);
    assert.ok(took - t0 <= 2000 + 5 * RENEW, `preempted ${took - t0} ms after lb1 started`);
    const master = first('lb1', 'MASTER', t0)!;
    const backup = first('lb2', 'BACKUP', t0)!;
    assert.equal(master.epoch, 2);
    assert.ok(published.indexOf(master) < published.indexOf(backup), 'lb1 published MASTER before lb2 went BACKUP (make-before-break)');
  });

  test('a holder that is no longer ready hands the VIP over first, then goes to FAULT', async () => {
    const [a, b] = await pairWithLb1Master(vipOf());
    const t0 = clock.now();
    a.ready.value = false;
    await runUntil('lb1 FAULT', () => stateOf(a) === 'FAULT');
    const master = first('lb2', 'MASTER', t0)!;
    const fault = first('lb1', 'FAULT', t0)!;
    assert.ok(master !== undefined, 'lb2 took the VIP');
    assert.ok(published.indexOf(master) < published.indexOf(fault), 'lb2 served before lb1 left MASTER');
    assert.ok(a.aborts.length > 0 && a.aborts[0] <= master.at, 'lb1 leader work stopped before lb2 took over');
    assert.equal(stateOf(b), 'MASTER');
    // Ready again, lb1 competes again and, with preempt, takes its VIP back.
    a.ready.value = true;
    await runUntil('lb1 MASTER again', () => stateOf(a) === 'MASTER' && stateOf(b) === 'BACKUP');
  });

  test('a holder whose renewals fail steps down at half a lease, before the lease can expire for the others', async () => {
    const [a, b] = await pairWithLb1Master(vipOf());
    const expiresAt = medium.get('vip/vip-a')!.expiresAt;
    const lastRenew = expiresAt - LEASE;
    a.store.cut(true);
    const down = await runUntil('lb1 steps down', () => stateOf(a) !== 'MASTER');
    assert.equal(stateOf(a), 'BACKUP');
    assert.ok(down <= lastRenew + LEASE / 2 + 20, `stepped down ${down - lastRenew} ms after its last renewal`);
    assert.ok(down < expiresAt, 'before the lease ran out');
    assert.equal(a.aborts.length, 1);
    assert.ok(a.aborts[0] <= down);
    assert.ok(a.elector.status().renewFailures > 0);
    const took = await runUntil('lb2 MASTER', () => stateOf(b) === 'MASTER');
    assert.ok(took >= expiresAt, `lb2 took it ${took - expiresAt} ms after the lease ran out, not before`);
  });

  test('a failed MASTER hook puts the node in FAULT for two leases, and the other node takes the VIP meanwhile', async () => {
    const hookLog = join(freshWithDir(), 'hooks.log');
    setEnv('HOOK_LOG', hookLog);
    setEnv('HOOK_FAIL', 'MASTER@lb1');
    const vip = vipOf({ preempt: false });
    const a = await startNode('lb1', vip, join(FIXTURES, 'record-hook.sh'));
    const b = await startNode('lb2', vip);
    await clock.advance(2 * RENEW);
    await waitReal('lb1 FAULT', () => stateOf(a) === 'FAULT');
    const faultAt = first('lb1', 'FAULT')!.at;
    await runUntil('lb2 MASTER', () => stateOf(b) === 'MASTER');
    await runUntil('2 leases after the failure', () => clock.now() >= faultAt + 2 * LEASE - 20);
    assert.equal(stateOf(a), 'FAULT', 'still in FAULT just before two leases');
    const back = await runUntil('lb1 BACKUP', () => stateOf(a) === 'BACKUP');
    assert.ok(back - faultAt >= 2 * LEASE, `back after ${back - faultAt} ms`);
    assert.equal(stateOf(b), 'MASTER', 'without preempt lb2 keeps it');
    const masters = readFileSync(hookLog, 'utf8').split('\n').filter((l) => / start MASTER /.test(l));
    assert.equal(masters.length, 1, 'lb1 ran its MASTER hook once');
  });

  test('release is make-before-break: it returns once the other node serves, and only then does this node leave MASTER', async () => {
    const [a, b] = await pairWithLb1Master(vipOf({ preempt: false }));
    const t0 = clock.now();
    let released: boolean | null = null;
    void a.elector.release().then((r) => (released = r));
    await runUntil('release returns', () => released !== null);
    assert.equal(released, true);
    const lease = medium.get<{ holder: string; serving: boolean }>('vip/vip-a')!.value;
    assert.deepEqual([lease.holder, lease.serving], ['lb2', true], 'lb2 serves when release returns');
    assert.equal(stateOf(b), 'MASTER');
    const master = first('lb2', 'MASTER', t0)!;
    const backup = first('lb1', 'BACKUP', t0)!;
    assert.ok(published.indexOf(master) < published.indexOf(backup), 'lb2 MASTER before lb1 BACKUP');
    assert.ok(clock.now() - t0 < LEASE, `handed over in ${clock.now() - t0} ms of clock time, not by expiry`);
  });

  test('a MASTER hook still running when the lease is lost is stopped, with every process it started', async () => {
    const pids = join(freshWithDir(), 'pids');
    setEnv('HOOK_PIDS', pids);
    const a = await startNode('lb1', vipOf(), join(FIXTURES, 'slow-master-hook.sh'));
    await clock.advance(2 * RENEW);
    await waitReal('the MASTER hook to start', () => readFileSync(pids, { flag: 'a+' }).toString().includes(' '));
    const [shell, child] = readFileSync(pids, 'utf8').trim().split(' ').map(Number);
    // The hook never confirms the lease, so it runs out (the store gives a new holder
    // the handover timeout to confirm): the lease is lost while the hook still runs.
    // Not ready by then, lb1 does not take the VIP again at once.
    a.ready.value = false;
    const t0 = performance.now();
    await clock.advance(HANDOVER + RENEW);
    await waitReal('lb1 to leave MASTER', () => published.some((p) => p.node === 'lb1' && p.epoch > 0 && p.state !== 'MASTER'));
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await waitReal('the hook and its child to be gone', () => !alive(shell) && !alive(child));
    assert.ok(performance.now() - t0 < 10_000, 'stopped long before the hook timeout (30 s)');
    assert.equal(first('lb1', 'MASTER'), undefined, 'never published MASTER: the lease was never confirmed');
  });
});
