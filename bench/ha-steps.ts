// Steps of the namespace benchmarks that more than one of them takes.

import type { HaLab, Prober } from '../test/ha/lab.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * vip-a settled on lb1, a client probing it, lb1's link goes down until lb2 has taken
 * the VIP, then comes back (lb1's stale neighbour entries flushed). Returns the stopped
 * prober, whose figures are the outage a client saw.
 */
export async function linkDown(h: HaLab): Promise<Prober> {
  await h.settle('vip-a', 'lb1', 20_000);
  await sleep(1500);
  const p = h.probe('vip-a');
  await p.connectedSince(0);
  await sleep(300);
  await h.link('lb1', false);
  await h.taken('vip-a', 'lb2', 10_000);
  await sleep(400);
  await p.stop();
  await h.link('lb1', true);
  await h.lab.must(h.ns.lb1, ['ip', 'neigh', 'flush', 'dev', 'eth0']);
  return p;
}
