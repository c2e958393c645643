// The `ha.store: etcd` scenarios of `npm run bench:failover` (test/ha/etcd-netns.test.ts,
// N runs each): the namespace test bed with an etcd of its own on the lab's bridge
// (test/ha/etcd-lab.ts), lease 1 s, renew 200 ms, and a client probing vip-a with a new
// TCP connection every 10 ms (for a frozen holder, a GET on each: its kernel still accepts
// connections that nobody answers). bench/failover.ts runs them and writes the table:
//
//   npm run bench:failover -- --runs 3 --only etcd-kill9,etcd-stop,etcd-stop-sidecar

import { etcdUnavailable } from '../test/helpers/etcd.ts';
import { labEtcdStore, startLabEtcd } from '../test/ha/etcd-lab.ts';
import { hookRuns } from '../test/ha/hook-runs.ts';
import type { HaLab, LabOptions, Prober } from '../test/ha/lab.ts';

const LEASE = 1000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One run's figures, as bench/failover.ts tabulates them. */
interface EtcdSample {
  outageMs: number;
  failed: number;
  slow: number;
  probes: number;
  hookMs?: number;
}

export interface EtcdScenario {
  readonly id: string;
  readonly title: string;
  readonly lab: LabOptions;
  readonly setup: (h: HaLab) => Promise<void>;
  readonly run: (h: HaLab, i: number) => Promise<EtcdSample>;
}

/** etcd in the lab, then lb2 as the standby; lb1 (preferred) starts in each run. */
async function setup(h: HaLab): Promise<void> {
  const reason = etcdUnavailable();
  if (reason !== null) throw new Error(reason);
  await startLabEtcd(h);
  await h.start('lb2');
}

/** lb1 (re)started and holding vip-a, the client getting through; returns the prober. */
async function held(h: HaLab, http = false): Promise<Prober> {
  const lb1 = h.nodes.get('lb1');
  if (lb1 === undefined || lb1.proxy.exitCode !== null || lb1.proxy.signalCode !== null) await h.start('lb1');
  await h.settle('vip-a', 'lb1', 20_000);
  await sleep(300);
  const p = h.probe('vip-a', { http });
  await p.connectedSince(0);
  await sleep(300);
  return p;
}

function figures(h: HaLab, p: Prober, lb2From: number): EtcdSample {
  const worst = Math.max(0, ...p.outages().map((o) => o.ms));
  const master = hookRuns(h, 'lb2').find((r) => r.vip === 'vip-a' && r.state === 'MASTER' && r.offset >= lb2From);
  return { outageMs: worst, failed: p.failures().length, slow: p.slow().length, probes: p.results.length, hookMs: master?.ms };
}

const kill9: EtcdScenario = {
  id: 'etcd-kill9',
  title: 'etcd store: kill -9 of every tandem process on the holder, hook run by tandem (lease 1 s, renew 200 ms)',
  lab: { etcd: labEtcdStore(), preemptDelay: 500 },
  setup,
  run: async (h) => {
    const p = await held(h);
    const from = h.nodes.get('lb2')!.output().length;
    const killedAt = performance.now();
    await h.signalAll('lb1', 'SIGKILL');
    const took = await h.taken('vip-a', 'lb2', 10 * LEASE);
    await p.connectedSince(killedAt + took);
    await sleep(400);
    await p.stop();
    await h.signal('lb1', 'SIGKILL');
    return figures(h, p, from);
  },
};

function stop(sidecar: boolean): EtcdScenario {
  return {
    id: sidecar ? 'etcd-stop-sidecar' : 'etcd-stop',
    title: sidecar
      ? 'etcd store: SIGSTOP of the holder for 2 s, then SIGCONT, VIP moved by `tandem vip-agent` (probes: GET on a new connection)'
      : 'etcd store: SIGSTOP of the holder for 2 s, then SIGCONT, hook run by tandem (probes: GET on a new connection)',
    lab: { etcd: labEtcdStore(), preemptDelay: 1000, sidecar },
    setup,
    run: async (h) => {
      // A frozen process's kernel still accepts connections: only an answer tells who serves.
      const p = await held(h, true);
      const from = h.nodes.get('lb2')!.output().length;
      const stoppedAt = performance.now();
      await h.signalAll('lb1', 'SIGSTOP');
      await h.taken('vip-a', 'lb2', 10 * LEASE);
      await sleep(Math.max(0, stoppedAt + 2 * LEASE - performance.now()));
      await h.signalAll('lb1', 'SIGCONT');
      // The client follows lb2 until lb1, back, takes vip-a again (make-before-break).
      await h.settle('vip-a', 'lb1', 20_000);
      await p.connectedSince(performance.now());
      await sleep(400);
      await p.stop();
      return figures(h, p, from);
    },
  };
}

export const etcdScenarios: EtcdScenario[] = [kill9, stop(false), stop(true)];
