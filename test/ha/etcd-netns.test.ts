// `ha.store: etcd` as a client sees it: real `tandem run` nodes in network namespaces
// (test/ha/lab.ts), a real etcd in a host of its own on the lab's bridge
// (test/ha/etcd-lab.ts), a client that opens a new TCP connection to a VIP every 10 ms,
// and a watcher of `ip monitor address` in every node's namespace. The nodes' hook runs
// (with their epochs) come from their logs. Exact figures are `npm run bench:failover`'s
// (`--only etcd-kill9,etcd-stop`); the bounds here hold on a busy machine.

import { after, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { etcdUnavailable } from '../helpers/etcd.ts';
import { netnsUnavailable, run } from '../helpers/netns.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';
import { labEtcdStore, startLabEtcd } from './etcd-lab.ts';
import { hookRuns, type HookRun } from './hook-runs.ts';
import { HaLab, type LabOptions, type Prober } from './lab.ts';
import { sleep } from './support.ts';

const LEASE = 1000;
const RENEW = 200;
/** Both holders for longer than this is wrong even on an idle machine: a hook run on each side and a renewal. */
const OVERLAP_FLOOR = 400;
const RUNS = Number(process.env.TANDEM_HA_RUNS ?? 1);

const missingArping = (await run('sh', ['-c', 'command -v arping'])).code !== 0;
const skip = skipUnlessCi(netnsUnavailable() ?? (missingArping ? 'arping is not installed (apt-get install iputils-arping)' : null) ?? etcdUnavailable());

/** The longest outage a prober saw (0 when none). */
const worst = (p: Prober) => Math.max(0, ...p.outages().map((o) => o.ms));

function report(t: TestContext, line: string): void {
  t.diagnostic(line);
  process.stdout.write(`# ${line}\n`);
}

/** Starts probing `vip`; resolves once the client got through. */
async function probing(h: HaLab, vip: string, http = false): Promise<Prober> {
  const p = h.probe(vip, { http });
  await p.connectedSince(0);
  await sleep(300);
  return p;
}

/** Resolves with `id`'s first hook run of `vip` logged after output offset `from` that matches. */
async function nextRun(h: HaLab, id: string, vip: string, from: number, match: (r: HookRun) => boolean, ms: number, what: string): Promise<HookRun> {
  const t0 = performance.now();
  for (;;) {
    const hit = hookRuns(h, id).find((r) => r.vip === vip && r.offset >= from && match(r));
    if (hit !== undefined) return hit;
    if (performance.now() - t0 > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${h.logs()}`);
    await sleep(20);
  }
}

/** How far a node's output has come: hook runs logged later have a greater offset. */
const mark = (h: HaLab, id: string) => h.nodes.get(id)?.output().length ?? 0;

/** Resolves once no node has logged a hook run for `ms`. */
async function quiet(h: HaLab, ms: number, within = 30_000): Promise<void> {
  const t0 = performance.now();
  let count = -1;
  let since = performance.now();
  for (;;) {
    const now = [...h.nodes.keys()].reduce((n, id) => n + hookRuns(h, id).length, 0);
    if (now !== count) [count, since] = [now, performance.now()];
    if (performance.now() - since >= ms) return;
    if (performance.now() - t0 > within) throw new Error(`hooks still running after ${within} ms\n${h.logs()}`);
    await sleep(50);
  }
}

describe('etcd store in network namespaces: failover as a client sees it', { skip, concurrency: false }, () => {
  const labs: HaLab[] = [];
  after(async () => {
    for (const h of labs) await h.destroy();
  });
  const lab = async (opts: LabOptions) => {
    const h = await HaLab.create({ lease: LEASE, renewEvery: RENEW, ...opts, etcd: labEtcdStore() });
    labs.push(h);
    await startLabEtcd(h);
    return h;
  };
  const done = async (h: HaLab) => {
    labs.splice(labs.indexOf(h), 1);
    await h.destroy();
  };

  test('kill -9 of every tandem process on the holder: the standby holds the VIP and the client gets through again within about a lease, at a greater epoch', async (t) => {
    const h = await lab({ preemptDelay: 500 });
    await h.start('lb2');
    const outages: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      // A new process: its output, and so its hook runs, start from offset 0.
      await h.start('lb1');
      await h.settle('vip-a', 'lb1', 20_000);
      const held = await nextRun(h, 'lb1', 'vip-a', 0, (r) => r.state === 'MASTER', 5000, 'lb1 to hold vip-a');
      const p = await probing(h, 'vip-a');
      const before = mark(h, 'lb2');
      const killedAt = performance.now();
      await h.signalAll('lb1', 'SIGKILL');
      // The dead node's address stays on its interface (its next start removes it); lb2's counts.
      const took = await h.taken('vip-a', 'lb2', 10 * LEASE);
      await p.connectedSince(killedAt + took);
      await sleep(300);
      await p.stop();
      const taken = await nextRun(h, 'lb2', 'vip-a', before, (r) => r.state === 'MASTER', 5000, 'lb2 to run MASTER');
      assert.ok(taken.epoch > held.epoch, `lb2 holds at epoch ${taken.epoch}, after lb1's ${held.epoch}`);
      assert.ok(p.okBetween(0, killedAt) > 0, 'the client got through before the kill');
      outages.push(worst(p));
      await h.signal('lb1', 'SIGKILL');
    }
    report(t, `etcd kill -9 of the holder: outage ${outages.map(Math.round).join(', ')} ms (lease ${LEASE} ms, renew ${RENEW} ms)`);
    // A takeover comes at most a lease (plus 50 ms) after the holder's last write, then a
    // grant, a transaction and the MASTER hook up to its first gratuitous ARP: within
    // TTL + 300 ms on an idle machine (npm run bench:failover). On a busy one hooks are
    // slow, so the bound adds two hook runs as slow as the slowest this lab logged.
    const bound = LEASE + 300 + h.overlapAllowed(0);
    for (const o of outages) assert.ok(o <= bound, `outage ${Math.round(o)} ms (bound ${Math.round(bound)} ms)\n${h.logs()}`);
    await done(h);
  });

  for (const sidecar of [false, true]) {
    const how = sidecar ? 'VIP moved by the vip-agent sidecar' : 'hook run by tandem';
    test(`SIGSTOP of the holder past its lease, then SIGCONT (${how}): its first hook after resuming is BACKUP, it holds again only by a new acquisition, and no two nodes act as holders`, async (t) => {
      const h = await lab({ preemptDelay: 1000, sidecar });
      await h.watcher.start();
      await Promise.all([h.start('lb1'), h.start('lb2')]);
      await h.settle('vip-a', 'lb1', 20_000);
      const held = await nextRun(h, 'lb1', 'vip-a', 0, (r) => r.state === 'MASTER', 5000, 'lb1 to hold vip-a');
      await quiet(h, 500);
      // A GET on each new connection: a frozen process's kernel still accepts connections.
      const p = await probing(h, 'vip-a', true);
      const before = mark(h, 'lb2');
      const frozen = mark(h, 'lb1');
      const stoppedAt = performance.now();
      await h.signalAll('lb1', 'SIGSTOP');
      await h.taken('vip-a', 'lb2', 10 * LEASE);
      const taken = await nextRun(h, 'lb2', 'vip-a', before, (r) => r.state === 'MASTER', 5000, 'lb2 to run MASTER');
      assert.ok(taken.epoch > held.epoch, `lb2 holds at epoch ${taken.epoch}, after lb1's ${held.epoch}`);
      // Frozen past the lease and etcd's revocation loop (500 ms), then thawed.
      await sleep(Math.max(0, stoppedAt + LEASE + 1000 - performance.now()));
      const frozenFor = performance.now() - stoppedAt;
      const resumed = mark(h, 'lb1');
      const resumedAt = performance.now();
      await h.signalAll('lb1', 'SIGCONT');
      const first = await nextRun(h, 'lb1', 'vip-a', resumed, () => true, 10 * LEASE, "lb1's first hook run after resuming");
      assert.notEqual(first.state, 'MASTER', `lb1's first hook after the freeze: ${first.state} at epoch ${first.epoch}`);
      if (!sidecar) assert.equal(first.state, 'BACKUP');
      // lb1 is preferred: it takes the VIP back by a handover after its preempt delay, at a newer epoch.
      await h.settle('vip-a', 'lb1', 15_000 + h.overlapAllowed(0));
      const back = await nextRun(h, 'lb1', 'vip-a', resumed, (r) => r.state === 'MASTER', 5000, 'lb1 to hold vip-a again');
      assert.ok(back.epoch > taken.epoch, `lb1 holds again at epoch ${back.epoch}, after lb2's ${taken.epoch}`);
      const stale = hookRuns(h, 'lb1').filter((r) => r.offset >= resumed && r.state === 'MASTER' && r.epoch <= taken.epoch);
      assert.deepEqual(stale, [], 'lb1 never ran MASTER at an epoch older than lb2\'s after the freeze');
      await p.connectedSince(performance.now());
      await sleep(300);
      await p.stop();
      // `ip addr` in both namespaces: a frozen process cannot run a hook, so with the
      // in-process hook its address stays on its interface until it resumes (and removes
      // it first thing); the sidecar removes it a quarter of a lease before the lease the
      // proxy last told it of runs out, so before lb2 can take the key over.
      const allowed = h.overlapAllowed(OVERLAP_FLOOR);
      const overlaps = h.watcher.overlaps.filter((o) => o.vip === 'vip-a');
      report(t, `etcd SIGSTOP (${how}), frozen ${Math.round(frozenFor)} ms: both held vip-a for ${overlaps.map((o) => `${Math.round(o.ms)} ms from ${Math.round(o.at - stoppedAt)} ms after the stop`).join('; ') || 'no time'}; client outage ${Math.round(worst(p))} ms, ${p.failures().length} failed probes`);
      if (sidecar) {
        const removed = hookRuns(h, 'lb1').filter((r) => r.vip === 'vip-a' && r.offset >= frozen && r.offset < resumed);
        assert.deepEqual(removed.map((r) => r.state), ['FAULT'], `lb1's agent removed vip-a while the proxy was frozen\n${h.logs()}`);
        assert.match(h.logs(), /lease of vip-a is running out/, 'the agent removed vip-a by the lease its proxy last told of, not after a lease of silence');
        const during = overlaps.filter((o) => o.at >= stoppedAt && o.at < resumedAt);
        assert.deepEqual(during.map((o) => `${Math.round(o.ms)} ms from ${Math.round(o.at - stoppedAt)} ms after the stop`), [], `no two holders while lb1 was frozen\n${h.logs()}`);
        // Any other overlap is a handover (at the start, or the failback), make-before-break.
        for (const o of overlaps) assert.ok(o.ms <= allowed, `both held vip-a for ${Math.round(o.ms)} ms (allowed ${Math.round(allowed)} ms)\n${h.logs()}`);
      } else {
        // The overlap that began while lb1 was frozen (lb2 took over) ends with lb1's first
        // hook after resuming. Any other is a handover (at the start, or the failback),
        // make-before-break: a hook run.
        for (const o of overlaps) {
          const what = `both held vip-a from ${Math.round(o.at - stoppedAt)} ms after the stop for ${Math.round(o.ms)} ms (resumed at ${Math.round(resumedAt - stoppedAt)} ms, allowed ${Math.round(allowed)} ms)`;
          if (o.at >= stoppedAt && o.at < resumedAt) assert.ok(o.at + o.ms <= resumedAt + allowed, what);
          else assert.ok(o.ms <= allowed, what);
        }
      }
      await done(h);
    });
  }

  test('three nodes, three VIPs: one each; a killed node\'s VIP goes to a survivor, back it takes it again after the preempt delay; not one failed probe on the VIPs that did not move', async (t) => {
    // Three nodes, their hooks, etcd and two probing clients on a busy machine: a 3 s lease
    // keeps a slow keep-alive from costing a lease, and health checks with 800 ms to answer
    // keep a slow backend check from taking a node out (FAULT). What is shown here is
    // where the VIPs go, not how fast.
    const lease = 3 * LEASE;
    const preempt = 1000;
    const h = await lab({ nodes: ['lb1', 'lb2', 'lb3'], vips: ['vip-a', 'vip-b', 'vip-c'], lease, renewEvery: 250, preemptDelay: preempt, healthCheck: { interval: '1s', timeout: '800ms' } });
    await Promise.all([h.start('lb1'), h.start('lb2'), h.start('lb3')]);
    await Promise.all([h.settle('vip-a', 'lb1', 30_000), h.settle('vip-b', 'lb2', 30_000), h.settle('vip-c', 'lb3', 30_000)]);
    await quiet(h, 1000);
    const [pa, pb] = await Promise.all(['vip-a', 'vip-b'].map((v) => probing(h, v)));
    const marks = { lb1: mark(h, 'lb1'), lb2: mark(h, 'lb2') };
    const killedAt = performance.now();
    await h.signalAll('lb3', 'SIGKILL');
    await h.signal('lb3', 'SIGKILL');
    // vip-c's next node is lb1 (150 lb3, 120 lb1, 100 lb2).
    await h.taken('vip-c', 'lb1', 10 * lease);
    const moved = performance.now() - killedAt;
    const held = await nextRun(h, 'lb1', 'vip-c', marks.lb1, (r) => r.state === 'MASTER', 5000, 'lb1 to hold vip-c');
    await sleep(lease);

    const startedAt = performance.now();
    await h.start('lb3');
    await h.settle('vip-c', 'lb3', 15_000 + h.overlapAllowed(0));
    const backAfter = performance.now() - startedAt;
    const back = await nextRun(h, 'lb3', 'vip-c', 0, (r) => r.state === 'MASTER' && r.epoch > held.epoch, 5000, 'lb3 to hold vip-c again');
    await sleep(300);
    await Promise.all([pa.stop(), pb.stop()]);
    for (const id of ['lb1', 'lb2', 'lb3']) process.stdout.write(`# ${id}: ${hookRuns(h, id).map((r) => `${r.vip} ${r.state}@${r.epoch}`).join(', ')}\n`);
    report(t, `etcd three nodes: vip-c moved to lb1 ${Math.round(moved)} ms after the kill, back on lb3 ${Math.round(backAfter)} ms after it started (epoch ${held.epoch} -> ${back.epoch}); probes on vip-a ${pa.results.length} (${pa.failures().length} failed), vip-b ${pb.results.length} (${pb.failures().length} failed)`);
    assert.ok(backAfter >= preempt, `lb3 took vip-c back ${Math.round(backAfter)} ms after it started, before its preempt delay`);
    for (const [vip, id] of [['vip-a', 'lb1'], ['vip-b', 'lb2']] as const) {
      const runs = hookRuns(h, id).filter((r) => r.vip === vip && r.offset >= marks[id]);
      assert.deepEqual(runs, [], `${vip} did not move\n${h.logs()}`);
      assert.deepEqual(await h.holders(vip), [id]);
    }
    assert.deepEqual(pa.failures(), [], 'no probe on vip-a failed');
    assert.deepEqual(pb.failures(), [], 'no probe on vip-b failed');
    assert.ok(pa.successes() > 0 && pb.successes() > 0);
    await done(h);
  });
});
