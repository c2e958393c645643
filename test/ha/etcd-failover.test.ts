// Real `tandem run` processes on a real etcd: the holder killed with SIGKILL, frozen
// with SIGSTOP past its lease, and etcd losing one member and then its quorum. The VIP
// hook records every transition with a wall clock (test/ha/fixtures/record-hook.sh), so
// the assertions are on the timeline the hooks saw: who held the VIP, at which epoch, in
// which order. Addresses are log-free (the recording hook does not touch interfaces), so
// this runs without root; the namespace tests cover the address and ARP side.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { config } from '../helpers/config.ts';
import { etcdSkip, startEtcd, type EtcdCluster } from '../helpers/etcd.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { sleep } from './support.ts';

const skip = etcdSkip();
const HOOK = new URL('./fixtures/record-hook.sh', import.meta.url).pathname;
const TTL = 1000;
const RENEW = 200;
/** etcd ends an expired lease on its next 500 ms revocation loop. */
const REVOKE_LOOP = 500;
const RUNS = Number(process.env.TANDEM_ETCD_RUNS ?? 1);

interface HookLine {
  /** Wall-clock ms. */
  readonly t: number;
  readonly phase: 'start' | 'end' | 'fail';
  readonly state: string;
  readonly vip: string;
  readonly node: string;
  readonly epoch: number;
}

function hookLines(file: string): HookLine[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text.split('\n').filter((l) => l !== '').map((l) => {
    const [ns, phase, state, vip, node, epoch] = l.split(' ');
    return { t: Number(BigInt(ns) / 1_000_000n), phase: phase as HookLine['phase'], state, vip, node, epoch: Number(epoch) };
  });
}

/** Resolves with the first hook line at or after `from` (wall ms) that matches. */
async function waitHook(file: string, match: (l: HookLine) => boolean, ms: number, what: string, from = 0): Promise<HookLine> {
  const t0 = performance.now();
  for (;;) {
    const hit = hookLines(file).find((l) => l.t >= from && match(l));
    if (hit !== undefined) return hit;
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}; hook log:\n${readFileSync(file, 'utf8')}`);
    await sleep(20);
  }
}

/** Resolves once every hook that started has ended and none started for `ms`. */
async function quiet(file: string, ms: number, within = 30_000): Promise<void> {
  const t0 = performance.now();
  for (;;) {
    const lines = hookLines(file);
    const open = lines.filter((l) => l.phase === 'start').length - lines.filter((l) => l.phase !== 'start').length;
    if (open === 0 && Date.now() - (lines.at(-1)?.t ?? 0) >= ms) return;
    if (performance.now() - t0 > within) throw new Error(`hooks still running after ${within} ms:\n${readFileSync(file, 'utf8')}`);
    await sleep(50);
  }
}

let prefixes = 0;

function haYaml(endpoints: readonly string[], priority: Record<string, number>, vips?: Record<string, unknown>[], ttl = TTL): string {
  const nodes = Object.fromEntries(Object.keys(priority).map((id, i) => [id, { address: `127.0.0.1:${17_900 + i}` }]));
  return config({
    routes: [{ name: 'all', pool: 'web' }],
    pools: { web: { backends: [{ name: 'a', url: 'http://127.0.0.1:9' }] } },
    ha: {
      store: 'etcd',
      etcd: { endpoints: [...endpoints], prefix: `/failover-${process.pid}-${++prefixes}` },
      nodes,
      lease: { duration: `${ttl}ms`, renewEvery: `${RENEW}ms` },
      hook: HOOK,
      hookTimeout: '2s',
      vips: vips ?? [{ name: 'vip-a', address: '10.213.9.100/24', interface: 'lo', priority }],
    },
  });
}

describe('etcd store: tandem processes on a real etcd', { skip, concurrency: false }, () => {
  const procs: TandemProcess[] = [];
  const clusters: EtcdCluster[] = [];
  after(async () => {
    await Promise.all(procs.map((p) => p.stop('SIGKILL')));
    await Promise.all(clusters.map((c) => c.close()));
  });
  const etcd = async (members = 1) => {
    const c = await startEtcd({ members });
    clusters.push(c);
    return c;
  };
  const hookLog = () => {
    const file = join(mkdtempSync(join(tmpdir(), 'tandem-etcd-hook-')), 'hook.log');
    writeFileSync(file, '');
    return file;
  };
  const run = async (yaml: string, node: string, log: string) => {
    const p = await startTandem(yaml, { args: ['--node', node], env: { HOOK_LOG: log }, timeoutMs: 60_000 });
    procs.push(p);
    await p.waitForLog(/ha: node \S+ competing/, { from: 0 });
    return p;
  };
  const killAll = (p: TandemProcess, signal: NodeJS.Signals) => {
    for (const pid of [p.child.pid!, ...p.workerPids()]) {
      try {
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
  };

  test('kill -9 of the holder: the standby takes the VIP over a lease after the holder\'s last write, without waiting for etcd\'s expiry, at a greater epoch', async () => {
    const e = await etcd();
    const took: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const log = hookLog();
      const yaml = haYaml(e.endpoints, { lb1: 200, lb2: 100 });
      const lb1 = await run(yaml, 'lb1', log);
      const held = await waitHook(log, (l) => l.phase === 'end' && l.state === 'MASTER' && l.node === 'lb1', 10_000, 'lb1 to hold');
      const lb2 = await run(yaml, 'lb2', log);
      await waitHook(log, (l) => l.phase === 'end' && l.state === 'BACKUP' && l.node === 'lb2', 10_000, 'lb2 to stand by');
      // lb2 registers its candidacy on its first tick; let it renew a few times too.
      await sleep(3 * RENEW);
      const killedAt = Date.now();
      killAll(lb1, 'SIGKILL');
      const next = await waitHook(log, (l) => l.phase === 'start' && l.state === 'MASTER' && l.node === 'lb2', 5 * TTL, 'lb2 to take over', killedAt);
      took.push(next.t - killedAt);
      assert.ok(next.epoch > held.epoch, `epoch ${next.epoch} after ${held.epoch}`);
      await lb1.exited;
      await lb2.stop();
    }
    took.sort((a, b) => a - b);
    console.log(`etcd kill -9 takeover (kill to MASTER hook), ${RUNS} run(s): median ${took[Math.floor(took.length / 2)]} ms, range ${took[0]}-${took.at(-1)} ms`);
    // The holder's last write was at most a renew interval before the kill; the standby
    // takes over a lease (plus 50 ms) after it saw it, in one grant and one transaction,
    // then starts the hook: etcd's own expiry (a TTL in whole seconds, then a revocation
    // loop of 500 ms) is not waited for. A busy machine stretches the requests and the
    // hook's start (measured figures: docs/ha.md, npm run bench:failover).
    for (const t of took) assert.ok(t <= TTL + 700, `took over ${t} ms after the kill (etcd's expiry would take up to ${TTL + REVOKE_LOOP} ms)`);
  });

  test('SIGSTOP of the holder past its lease, then SIGCONT: it runs BACKUP before anything else and holds again only by a new acquisition', async () => {
    const e = await etcd();
    const log = hookLog();
    const yaml = haYaml(e.endpoints, { lb1: 200, lb2: 100 });
    const lb1 = await run(yaml, 'lb1', log);
    const held = await waitHook(log, (l) => l.phase === 'end' && l.state === 'MASTER' && l.node === 'lb1', 10_000, 'lb1 to hold');
    await run(yaml, 'lb2', log);
    await waitHook(log, (l) => l.phase === 'end' && l.state === 'BACKUP' && l.node === 'lb2', 10_000, 'lb2 to stand by');
    await sleep(3 * RENEW);
    const stoppedAt = Date.now();
    killAll(lb1, 'SIGSTOP');
    const taken = await waitHook(log, (l) => l.phase === 'end' && l.state === 'MASTER' && l.node === 'lb2', 5 * TTL, 'lb2 to take over', stoppedAt);
    assert.ok(taken.epoch > held.epoch);
    // Frozen for longer than the lease plus the revocation loop, then thawed.
    await sleep(Math.max(0, stoppedAt + TTL + REVOKE_LOOP + 500 - Date.now()));
    const resumedAt = Date.now();
    killAll(lb1, 'SIGCONT');
    const first = await waitHook(log, (l) => l.node === 'lb1', 5 * TTL, 'lb1 to run a hook after resuming', stoppedAt);
    assert.equal(first.state, 'BACKUP', `lb1's first hook after the freeze: ${first.state} at epoch ${first.epoch}`);
    assert.ok(first.t >= resumedAt, 'nothing ran on lb1 while it was frozen');
    // lb1 has the higher priority and preempt: it takes the VIP back by a handover, at a newer epoch.
    const back = await waitHook(log, (l) => l.phase === 'end' && l.state === 'MASTER' && l.node === 'lb1', 10 * TTL, 'lb1 to take the VIP back', resumedAt);
    assert.ok(back.epoch > taken.epoch, `lb1 holds again at epoch ${back.epoch}, after lb2's ${taken.epoch}`);
    const lines = hookLines(log).filter((l) => l.t >= stoppedAt);
    const lb1Master = lines.filter((l) => l.node === 'lb1' && l.state === 'MASTER');
    assert.ok(lb1Master.every((l) => l.epoch > taken.epoch), `lb1 never ran MASTER at an old epoch after the freeze: ${JSON.stringify(lb1Master)}`);
  });

  test('3-member etcd: one member killed changes nothing; quorum lost, the holder steps down by its own clock and nobody holds; quorum back, leadership returns', async () => {
    const e = await etcd(3);
    // A lease of 3 s: moving to the next endpoint when a member dies must fit in half a
    // lease even when a busy machine slows the failed request's retry.
    const lease = 3 * TTL;
    // Both nodes talk to a follower first; that follower dies. (A dead leader costs an
    // election, during which no lease can be renewed: see docs/ha.md.)
    const leader = await e.leader();
    const followers = e.members.filter((m) => m !== leader);
    const order = [followers[0], leader, followers[1]];
    const log = hookLog();
    const yaml = haYaml(order.map((m) => m.clientUrl), { lb1: 200, lb2: 100 }, undefined, lease);
    const lb1 = await run(yaml, 'lb1', log);
    const held = await waitHook(log, (l) => l.phase === 'end' && l.state === 'MASTER' && l.node === 'lb1', 10_000, 'lb1 to hold');
    await run(yaml, 'lb2', log);
    await waitHook(log, (l) => l.phase === 'end' && l.state === 'BACKUP' && l.node === 'lb2', 10_000, 'lb2 to stand by');
    await sleep(3 * RENEW);

    // The member both nodes talk to first dies: they move to the next, nothing else changes.
    const oneDown = Date.now();
    await followers[0].kill('SIGKILL');
    await sleep(3 * lease);
    assert.deepEqual(hookLines(log).filter((l) => l.t >= oneDown), [], `no hook ran while one member of three was down; lb1:\n${lb1.output()}`);
    assert.match(lb1.output(), new RegExp(`etcd ${followers[0].clientUrl.replaceAll('.', '\\.')}: `), 'the failed endpoint is logged with its address');
    // And counted: requests, the failed attempts on that endpoint, the moves to the next.
    const metrics = await (await fetch(`${lb1.admin}/metrics`)).text();
    const count = (event: string) => Number(new RegExp(`^tandem_ha_store_events_total\\{store="etcd",event="${event}"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? -1);
    assert.ok(count('requests') > 0, 'etcd requests counted');
    assert.ok(count('endpoint_errors') >= 1, `the dead member's errors counted (${count('endpoint_errors')})`);
    assert.ok(count('failovers') >= 1, `the move to the next endpoint counted (${count('failovers')})`);

    // A second member dies: no quorum. lb1 cannot renew and steps down within its lease.
    const lostAt = Date.now();
    await leader.kill('SIGKILL');
    const down = await waitHook(log, (l) => l.node === 'lb1', 3 * lease, 'lb1 to step down', lostAt);
    assert.equal(down.state, 'BACKUP');
    // Its last renewal may have been confirmed up to one renew interval before the loss;
    // it steps down at half a lease after that, well before the lease could run out.
    assert.ok(down.t - lostAt <= lease, `stepped down ${down.t - lostAt} ms after quorum was lost`);
    console.log(`etcd quorum lost: the holder stepped down ${down.t - lostAt} ms after the second member died`);
    await sleep(3 * lease);
    const masters = hookLines(log).filter((l) => l.t >= lostAt && l.state === 'MASTER');
    assert.deepEqual(masters, [], 'nobody holds the VIP without quorum');

    // Quorum back: the VIP is held again, at a newer epoch.
    const backAt = Date.now();
    await Promise.all([followers[0].start(), leader.start()]);
    const again = await waitHook(log, (l) => l.phase === 'end' && l.state === 'MASTER', 15 * lease, 'a node to hold the VIP again', backAt);
    assert.ok(again.epoch > held.epoch, `epoch ${again.epoch} after ${held.epoch}`);
    console.log(`etcd quorum back: ${again.node} held the VIP ${again.t - backAt} ms after both members were started again`);
  });
  test('three nodes, three VIPs: one each; a killed node\'s VIP goes to the next in its list while the others stay put; back, it takes its VIP again after the preempt delay, make-before-break', async () => {
    const e = await etcd();
    const log = hookLog();
    const vip = (name: string, octet: number, order: string[]) => ({
      name, address: `10.213.9.${octet}/24`, interface: 'lo', priority: { [order[0]]: 150, [order[1]]: 120, [order[2]]: 100 }, preempt: { delay: '1s' },
    });
    // Six hooks and three processes on two busy cores: a 3 s lease keeps slow hooks and
    // stalls from costing a lease (with 2 s, one run under two busy loops and the rest of
    // the suite saw lb1 lose vip-a while vip-c moved).
    const lease = 3 * TTL;
    const yaml = haYaml(e.endpoints, { lb1: 1, lb2: 1, lb3: 1 }, [
      vip('vip-a', 101, ['lb1', 'lb2', 'lb3']),
      vip('vip-b', 102, ['lb2', 'lb3', 'lb1']),
      vip('vip-c', 103, ['lb3', 'lb1', 'lb2']),
    ], lease);
    const [, , lb3] = await Promise.all(['lb1', 'lb2', 'lb3'].map((n) => run(yaml, n, log)));
    const holds = (v: string, n: string, from = 0) => waitHook(log, (l) => l.phase === 'end' && l.state === 'MASTER' && l.vip === v && l.node === n, 15_000, `${n} to hold ${v}`, from);
    await Promise.all([holds('vip-a', 'lb1'), holds('vip-b', 'lb2'), holds('vip-c', 'lb3')]);
    // Whoever held a VIP before its preferred node took it over has let it go.
    await quiet(log, 1000);
    const killedAt = Date.now();
    killAll(lb3, 'SIGKILL');
    const moved = await holds('vip-c', 'lb1', killedAt);
    // About a lease: the bound allows a second one for two busy cores (a run under two busy
    // loops took 3.3 s with a 2 s lease); how fast it moves is the benchmark's to measure.
    assert.ok(moved.t - killedAt <= 2 * lease + REVOKE_LOOP + 1000, `vip-c moved ${moved.t - killedAt} ms after the kill`);
    await sleep(lease);
    const others = hookLines(log).filter((l) => l.t >= killedAt && l.vip !== 'vip-c');
    assert.deepEqual(others, [], 'vip-a and vip-b did not move');
    await lb3.exited;

    const backAt = Date.now();
    await run(yaml, 'lb3', log);
    const taken = await holds('vip-c', 'lb3', backAt);
    assert.ok(taken.epoch > moved.epoch);
    const released = await waitHook(log, (l) => l.phase === 'start' && l.state === 'BACKUP' && l.vip === 'vip-c' && l.node === 'lb1', 5 * lease, 'lb1 to let vip-c go', backAt);
    assert.ok(released.t >= taken.t, `lb1 removed vip-c (${released.t}) only after lb3 had it up (${taken.t})`);
    // Preempted only after lb3 had been ready for its delay (1 s).
    const lb3Competing = hookLines(log).find((l) => l.t >= backAt && l.node === 'lb3' && l.state === 'BACKUP' && l.phase === 'end');
    assert.ok(lb3Competing !== undefined && taken.t - lb3Competing.t >= 1000 - 50, `lb3 took vip-c ${taken.t - (lb3Competing?.t ?? 0)} ms after it stood by`);
    const after = hookLines(log).filter((l) => l.t >= backAt && l.vip !== 'vip-c' && l.node !== 'lb3');
    assert.deepEqual(after, [], 'vip-a and vip-b did not move when lb3 came back');
  });
});
