// `node bench/lease-load.ts`: how short may the lease be on a busy machine? For each
// lease (and renew period) it starts the namespace pair (VIPs moved by the sidecar),
// puts vip-a on lb1, starts one busy loop per core, and watches for `--watch` seconds:
// any takeover of vip-a in that time is a false failover (nothing failed, the holder
// only missed its renewals). Then, still under load, it takes lb1's
// link down `--runs` times and measures the outage a client sees. Writes a Markdown table.
//
//   node bench/lease-load.ts                               # 150/40 to 1000/200 ms
//   node bench/lease-load.ts --leases 200/50 --watch 120 --runs 3
//
// Needs root and `ip netns`; the busy loops are killed when it ends.

import { spawn, type ChildProcess } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { HaLab } from '../test/ha/lab.ts';
import { netnsUnavailable } from '../test/helpers/netns.ts';
import { linkDown } from './ha-steps.ts';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Row {
  readonly lease: number;
  readonly renew: number;
  readonly watchedS: number;
  readonly falseFailovers: number;
  readonly outages: number[];
  readonly failed: number[];
  readonly load: string;
  readonly error: string | null;
}

/** Takeovers of vip-a the nodes logged from `marks` on: distinct epochs of "is MASTER" lines. */
function takeovers(h: HaLab, marks: Map<string, number>): number {
  const epochs = new Set<string>();
  for (const [id, node] of h.nodes) {
    const out = node.output().slice(marks.get(id) ?? 0);
    for (const m of out.matchAll(/VIP vip-a \S+ is MASTER on (\S+) \(held here, epoch (\d+)\)/g)) epochs.add(`${m[1]}@${m[2]}`);
  }
  return epochs.size;
}

async function measure(lease: number, renew: number, watchS: number, runs: number): Promise<Row> {
  const loops: ChildProcess[] = [];
  let h: HaLab | null = null;
  const outages: number[] = [];
  const failed: number[] = [];
  let falseFailovers = -1;
  let error: string | null = null;
  try {
    h = await HaLab.create({ sidecar: true, lease, renewEvery: renew, preemptDelay: 500 });
    await Promise.all([h.start('lb1'), h.start('lb2')]);
    await h.settle('vip-a', 'lb1', 20_000);
    await sleep(1000);
    for (let i = 0; i < cpus().length; i++) loops.push(spawn(process.execPath, ['-e', 'for(;;);'], { stdio: 'ignore' }));
    const marks = new Map([...h.nodes].map(([id, n]) => [id, n.output().length]));
    await sleep(watchS * 1000);
    falseFailovers = takeovers(h, marks);
    for (let i = 0; i < runs; i++) {
      const p = await linkDown(h);
      outages.push(Math.max(0, ...p.outages().map((o) => o.ms)));
      // Infinity: the outage was still running when the probes stopped (the VIP never came back).
      failed.push(p.failures().length);
      process.stderr.write(`  lease ${lease}/${renew}: link down run ${i + 1}: outage ${Math.round(outages.at(-1)!)} ms, ${failed.at(-1)} failed probes\n`);
    }
  } catch (err) {
    error = (err as Error).message.split('\n')[0];
    process.stderr.write(`  lease ${lease}/${renew} stopped: ${(err as Error).message}\n`);
  } finally {
    for (const l of loops) l.kill('SIGKILL');
    await h?.destroy();
  }
  return { lease, renew, watchedS: watchS, falseFailovers, outages, failed, load: loadavg().map((l) => l.toFixed(1)).join(' '), error };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const fmt = (x: number, unit: string) => (Number.isFinite(x) ? `${Math.round(x)}${unit}` : 'not over');
const range = (xs: number[], unit: string) =>
  xs.length === 0 ? '—' : `${fmt(median(xs), unit)} (${fmt(Math.min(...xs), '')}–${fmt(Math.max(...xs), '')})`;

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { leases: { type: 'string', default: '150/40,200/50,300/50,500/100,1000/200' }, watch: { type: 'string', default: '60' }, runs: { type: 'string', default: '3' } } });
  const reason = netnsUnavailable();
  if (reason !== null) {
    process.stderr.write(`bench/lease-load: ${reason}\n`);
    return 1;
  }
  const rows: Row[] = [];
  const before = loadavg().map((l) => l.toFixed(1)).join(' ');
  for (const spec of values.leases.split(',')) {
    const [lease, renew] = spec.split('/').map(Number);
    process.stderr.write(`lease ${lease} ms, renew ${renew} ms: ${cpus().length} busy loops, watching ${values.watch} s\n`);
    rows.push(await measure(lease, renew, Number(values.watch), Number(values.runs)));
  }
  const md = [
    `Load average ${before} before; one busy loop per core (${cpus().length}) during each row; VIPs moved by the sidecar.`,
    '',
    '| lease / renew | watched | false failovers (takeovers of vip-a) | link down: outage, median (range) | failed probes | load after |',
    '|---|--:|--:|--:|--:|--:|',
    ...rows.map((r) => `| ${r.lease} / ${r.renew} ms${r.error === null ? '' : ` **(stopped: ${r.error})**`} | ${r.watchedS} s | ${r.falseFailovers < 0 ? '—' : r.falseFailovers} | ${range(r.outages, ' ms')} | ${range(r.failed, '')} | ${r.load} |`),
    '',
  ].join('\n');
  process.stdout.write(md);
  return rows.some((r) => r.error !== null) ? 2 : 0;
}

process.exitCode = await main();
