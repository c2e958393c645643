// `npm run bench:failover`: the HA scenarios of test/ha/failover.test.ts, run N times
// each in network namespaces, with the exact figures the tests leave out: outage as a
// client sees it (new TCP connections every 10 ms; a probe slower than 100 ms counts as
// part of an outage), failed probes, the time from the moment the standby knew the
// holder was gone to the moment the client's neighbour entry moved to the new holder's
// MAC (its gratuitous ARP), and the MASTER hook's running time. Writes a Markdown table
// of medians and ranges, with the machine, its load and the commit.
//
//   npm run bench:failover                 # every scenario, 5 runs each
//   npm run bench:failover -- --runs 3 --only kill9,handover
//   npm run bench:failover -- --runs 3 --only etcd-kill9,etcd-stop,etcd-stop-sidecar   # bench/failover-etcd.ts
//
// Needs root, `ip netns`, arping (and nft for nothing here). Run it on an idle machine
// for figures to compare; the load average before and after is part of the report.

import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { HaLab, VIP_ADDR, type LabOptions, type Prober } from '../test/ha/lab.ts';
import { netnsUnavailable } from '../test/helpers/netns.ts';
import { etcdScenarios } from './failover-etcd.ts';
import { linkDown } from './ha-steps.ts';

const ROOT = resolve(import.meta.dirname, '..');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One run's figures; absent when a scenario does not measure it. */
interface Sample {
  outageMs: number;
  failed: number;
  slow: number;
  probes: number;
  /** From the kill (as this process sent it) to the client's neighbour entry moving. */
  killToArpMs?: number;
  detectToArpMs?: number;
  /** From the standby's "holder died" to the first gratuitous ARP from it captured in the client's namespace. */
  detectToWireMs?: number;
  hookMs?: number;
  resets?: number;
  /** Failed probes by why they failed (`timeout`, `ECONNRESET`, `status-503`...). */
  why?: Record<string, number>;
}

interface Scenario {
  readonly id: string;
  readonly title: string;
  readonly lab: LabOptions;
  /** Runs once per sample after the lab is up; returns that run's figures. */
  readonly run: (h: HaLab, i: number) => Promise<Sample>;
  readonly setup?: (h: HaLab) => Promise<void>;
}

/** Calls `onLine` for each line `child` prints. */
function eachLine(child: ChildProcess, onLine: (line: string) => void): void {
  let buf = '';
  child.stdout!.on('data', (c: Buffer) => {
    buf += c.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      onLine(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
}

/** Follows the client's neighbour table: when did an entry for `ip` move to `mac`? */
class NeighbourLog {
  private readonly child: ChildProcess;
  private readonly lines: { at: number; ip: string; mac: string }[] = [];

  constructor(h: HaLab) {
    this.child = h.lab.spawn(h.ns.client, ['ip', '-ts', 'monitor', 'neigh', 'dev', 'eth0'], { env: { ...process.env, TZ: 'UTC' }, stdio: ['ignore', 'pipe', 'ignore'] });
    eachLine(this.child, (line) => {
      const m = /^\[(\S+)\] (\S+) .*lladdr ([0-9a-f:]+)/.exec(line);
      if (m !== null) this.lines.push({ at: wallMs(m[1]), ip: m[2], mac: m[3] });
    });
  }

  /** First moment at or after `from` (wall clock ms) that the entry for `ip` showed `mac`. */
  movedAt(ip: string, mac: string, from: number): number | null {
    return this.lines.find((l) => l.ip === ip && l.mac === mac && l.at >= from)?.at ?? null;
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

/**
 * Captures ARP packets in the client's namespace with the kernel's receive timestamp
 * (a packet socket and SIOCGSTAMP, in perl: no capture tool needed): when did the first
 * gratuitous ARP for an address from a given MAC arrive on the wire?
 */
class ArpCapture {
  private readonly child: ChildProcess;
  private readonly packets: { at: number; mac: string; ip: string }[] = [];
  readonly ready: Promise<void>;

  constructor(h: HaLab) {
    const script = String.raw`
      use Socket; $| = 1;
      socket(my $s, 17, 3, unpack('S', pack('n', 0x0806))) or die "packet socket: $!";
      ioctl($s, 0x8906, my $on = "\0" x 16); # turns receive timestamps on
      print "ready\n";
      while (defined recv($s, my $buf, 2048, 0)) {
        my $tv = "\0" x 16; ioctl($s, 0x8906, $tv) or next;
        my ($sec, $usec) = unpack('q q', $tv);
        next if length $buf < 42;
        printf "%d.%06d %s %s\n", $sec, $usec, join(':', map { sprintf '%02x', $_ } unpack('C6', substr($buf, 22, 6))), join('.', unpack('C4', substr($buf, 28, 4)));
      }`;
    this.child = h.lab.spawn(h.ns.client, ['perl', '-e', script], { stdio: ['ignore', 'pipe', 'ignore'] });
    let ready: () => void = () => {};
    this.ready = new Promise((r) => (ready = r));
    eachLine(this.child, (line) => {
      if (line === 'ready') ready();
      const m = /^(\d+)\.(\d{6}) (\S+) (\S+)$/.exec(line);
      if (m !== null) this.packets.push({ at: Number(m[1]) * 1000 + Number(m[2]) / 1000, mac: m[3], ip: m[4] });
    });
  }

  /** First ARP at or after `from` (wall clock ms) that says `ip` is at `mac`. */
  firstAt(ip: string, mac: string, from: number): number | null {
    return this.packets.find((p) => p.ip === ip && p.mac === mac && p.at >= from)?.at ?? null;
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

/** `2026-12-02T07:04:51.710378` (UTC, microseconds) to wall-clock ms with the fraction kept. */
function wallMs(ts: string): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?/.exec(ts);
  if (m === null) return NaN;
  return Date.parse(`${m[1]}Z`) + Number(m[2] ?? 0) * 1000;
}

/** Timestamped lines of a node's log that match `re`, wall-clock ms. */
function logTimes(h: HaLab, id: string, re: RegExp): { at: number; m: RegExpExecArray }[] {
  const out: { at: number; m: RegExpExecArray }[] = [];
  for (const line of (h.nodes.get(id)?.output() ?? '').split('\n')) {
    const m = re.exec(line);
    if (m === null) continue;
    // `2026-...Z tandem: msg`, or a JSON line with `time` (epoch ms or ISO).
    const iso = /^(?:\[agent\] )?(\d{4}-\d\d-\d\dT[\d:.]+Z) /.exec(line)?.[1];
    const json = iso === undefined ? /"time":(?:(\d+)|"([^"]+)")/.exec(line) : null;
    const at = iso !== undefined ? Date.parse(iso) : json?.[1] !== undefined ? Number(json[1]) : json?.[2] !== undefined ? Date.parse(json[2]) : NaN;
    if (!Number.isNaN(at)) out.push({ at, m });
  }
  return out;
}

function worst(p: Prober): number {
  return Math.max(0, ...p.outages().map((o) => o.ms));
}

function probeFigures(p: Prober): Pick<Sample, 'outageMs' | 'failed' | 'slow' | 'probes' | 'why'> {
  const why: Record<string, number> = {};
  for (const f of p.failures()) why[f.why] = (why[f.why] ?? 0) + 1;
  return { outageMs: worst(p), failed: p.failures().length, slow: p.slow().length, probes: p.results.length, why };
}

/** Starts probing `vip` and resolves once the client got through. */
async function probing(h: HaLab, vip: string, http = false): Promise<Prober> {
  const p = h.probe(vip, { http });
  await p.connectedSince(0);
  await sleep(300);
  return p;
}

const startPair = async (h: HaLab): Promise<void> => {
  await Promise.all([h.start('lb1'), h.start('lb2')]);
};

/** lb1 starts again and takes vip-a back; the probe stops a little after. */
async function failback(h: HaLab, p: Prober): Promise<Sample> {
  await h.start('lb1');
  return failedBack(h, p);
}

/** Once lb1 holds vip-a again, the probe stops a little after. */
async function failedBack(h: HaLab, p: Prober): Promise<Sample> {
  await h.settle('vip-a', 'lb1', 10_000);
  await sleep(400);
  await p.stop();
  return probeFigures(p);
}

/** GET probes on vip-a while lb1 hands it over (SIGTERM) and takes it back once restarted. */
async function handoverAndFailback(h: HaLab): Promise<Sample> {
  await h.settle('vip-a', 'lb1');
  await sleep(500);
  const p = await probing(h, 'vip-a', true);
  await h.signal('lb1', 'SIGTERM');
  await h.settle('vip-a', 'lb2', 10_000);
  await sleep(300);
  return failback(h, p);
}

/** Wall-clock now, the clock tandem's log lines and `ip -ts` use. */
const wall = () => performance.timeOrigin + performance.now();

/** The holder dies (kill -9 of its tandem); the standby learns it from the closed heartbeat. */
function killScenario(id: string, title: string, sidecar: boolean, hook: 'builtin' | 'script' = 'builtin'): Scenario {
  return {
    id,
    title,
    lab: { sidecar, hook, preemptDelay: 500 },
    setup: async (h) => {
      await h.start('lb2');
    },
    run: async (h) => {
      await h.start('lb1');
      await h.settle('vip-a', 'lb1');
      await sleep(300);
      const neigh = new NeighbourLog(h);
      const capture = new ArpCapture(h);
      await capture.ready;
      const p = await probing(h, 'vip-a');
      const before = logTimes(h, 'lb2', /holder lb1 died/).length;
      const killedAt = wall();
      await h.signal('lb1', 'SIGKILL');
      await h.taken('vip-a', 'lb2', 10_000);
      await sleep(400);
      await p.stop();
      neigh.stop();
      capture.stop();
      const detected = logTimes(h, 'lb2', /holder lb1 died/)[before]?.at ?? NaN;
      if (Number.isNaN(detected)) process.stderr.write(`  lb2 logged no death of lb1 (lease expiry?):\n${h.nodes.get('lb2')?.output().split('\n').slice(-15).join('\n')}\n`);
      const arp = neigh.movedAt(VIP_ADDR['vip-a'], h.macs.lb2, killedAt);
      const wire = capture.firstAt(VIP_ADDR['vip-a'], h.macs.lb2, killedAt);
      const hook = logTimes(h, 'lb2', /vip hook(?: \(agent\))?: vip-a MASTER .* done in (\d+) ms/).filter((l) => l.at >= killedAt).at(0);
      if (sidecar) await h.signal('lb1', 'SIGTERM', { agent: true });
      return {
        ...probeFigures(p),
        killToArpMs: arp === null ? undefined : arp - killedAt,
        detectToArpMs: arp === null || Number.isNaN(detected) ? undefined : arp - detected,
        detectToWireMs: wire === null || Number.isNaN(detected) ? undefined : wire - detected,
        hookMs: hook === undefined ? undefined : Number(hook.m[1]),
      };
    },
  };
}

const scenarios: Scenario[] = [
  killScenario('kill9', 'kill -9 of the holder, built-in hook run by tandem (lease 1 s)', false),
  killScenario('kill9-sidecar', 'kill -9 of the holder, VIP moved by `tandem vip-agent`, built-in hook (lease 1 s)', true),
  killScenario('kill9-script', 'kill -9 of the holder, scripts/vip-hook.sh run by tandem (lease 1 s)', false, 'script'),
  {
    id: 'link',
    title: "holder's link down, lease 300 ms / renew 50 ms, sidecar",
    lab: { sidecar: true, lease: 300, renewEvery: 50, preemptDelay: 500 },
    setup: startPair,
    run: async (h) => {
      return probeFigures(await linkDown(h));
    },
  },
  {
    id: 'handover',
    title: 'planned handover (SIGTERM) and failback after the preempt delay, hook run by tandem (a GET on each probe)',
    lab: { preemptDelay: 1000 },
    setup: startPair,
    run: handoverAndFailback,
  },
  {
    id: 'handover-app',
    title: 'the same with backends that answer in 50 ms, as an application does: GETs in flight when the VIP moves',
    lab: { preemptDelay: 1000, backendDelayMs: 50 },
    setup: startPair,
    run: handoverAndFailback,
  },
  {
    id: 'failback-sidecar',
    title: 'failback after kill -9, sidecar, lease 300 ms (probes from the restart of the dead node on)',
    lab: { sidecar: true, lease: 300, renewEvery: 50, preemptDelay: 500 },
    setup: startPair,
    run: async (h) => {
      await h.settle('vip-a', 'lb1', 20_000);
      await h.signal('lb1', 'SIGKILL');
      await h.settle('vip-a', 'lb2', 10_000);
      await h.signal('lb1', 'SIGTERM', { agent: true });
      await sleep(300);
      return failback(h, await probing(h, 'vip-a'));
    },
  },
  {
    id: 'failback-link',
    title: "failback after the holder's link was down, sidecar, lease 300 ms (probes from the link's return on)",
    lab: { sidecar: true, lease: 300, renewEvery: 50, preemptDelay: 500 },
    setup: startPair,
    run: async (h) => {
      await linkDown(h);
      return failedBack(h, await probing(h, 'vip-a'));
    },
  },
  {
    id: 'active-active',
    title: 'active-active: probes on vip-b while vip-a fails back to its restarted node',
    lab: { vips: ['vip-a', 'vip-b'], preemptDelay: 500 },
    setup: startPair,
    run: async (h) => {
      await h.settle('vip-a', 'lb1', 20_000);
      await h.settle('vip-b', 'lb2', 20_000);
      await h.signal('lb1', 'SIGKILL');
      await h.taken('vip-a', 'lb2', 10_000);
      await sleep(300);
      return failback(h, await probing(h, 'vip-b'));
    },
  },
  ...etcdScenarios,
];

interface Result {
  readonly scenario: Scenario;
  readonly samples: Sample[];
  readonly error: string | null;
}

async function runScenario(s: Scenario, runs: number): Promise<Result> {
  const samples: Sample[] = [];
  let h: HaLab | null = null;
  try {
    h = await HaLab.create(s.lab);
    await s.setup?.(h);
    for (let i = 0; i < runs; i++) {
      const sample = await s.run(h, i);
      samples.push(sample);
      process.stderr.write(`  ${s.id} run ${i + 1}: ${JSON.stringify(sample)}\n`);
    }
    return { scenario: s, samples, error: null };
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0];
    process.stderr.write(`  ${s.id} failed: ${(err as Error).message}\n`);
    return { scenario: s, samples, error: msg };
  } finally {
    await h?.destroy();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** `median (min–max)` of the defined values, or a dash. */
function cell(xs: (number | undefined)[], unit = ''): string {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x));
  if (v.length === 0) return '—';
  const r = (x: number) => (Math.abs(x) >= 10 ? Math.round(x).toString() : x.toFixed(1));
  const min = Math.min(...v);
  const max = Math.max(...v);
  return min === max ? `${r(min)}${unit}` : `${r(median(v))}${unit} (${r(min)}–${r(max)})`;
}

/** Failed probes of every run added up by cause, e.g. `ECONNRESET 2, timeout 1`. */
function whyCell(samples: readonly Sample[]): string {
  const sum = new Map<string, number>();
  for (const s of samples) for (const [k, n] of Object.entries(s.why ?? {})) sum.set(k, (sum.get(k) ?? 0) + n);
  return sum.size === 0 ? '—' : [...sum].map(([k, n]) => `${k} ${n}`).join(', ');
}

function table(results: Result[]): string {
  const rows = results.map(({ scenario: s, samples: x, error }) => {
    const note = error === null ? '' : ` **(stopped: ${error})**`;
    return `| ${s.title}${note} | ${x.length} | ${cell(x.map((r) => r.outageMs), ' ms')} | ${cell(x.map((r) => r.failed))} | ${cell(x.map((r) => r.slow))} | ${cell(x.map((r) => r.killToArpMs), ' ms')} | ${cell(x.map((r) => r.detectToWireMs), ' ms')} | ${cell(x.map((r) => r.detectToArpMs), ' ms')} | ${cell(x.map((r) => r.hookMs), ' ms')} | ${whyCell(x)} |`;
  });
  return [
    '| scenario | runs | outage, median (range) | failed probes | probes > 100 ms | kill → client has new MAC | holder gone → first ARP on the wire | holder gone → client has new MAC | MASTER hook | failed probes of all runs, by cause |',
    '|---|--:|--:|--:|--:|--:|--:|--:|--:|---|',
    ...rows,
  ].join('\n');
}

function commit(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${sha} with uncommitted changes` : sha;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { runs: { type: 'string', default: '5' }, only: { type: 'string' }, out: { type: 'string', default: join(ROOT, 'bench/results') } },
  });
  const reason = netnsUnavailable();
  if (reason !== null) {
    process.stderr.write(`bench:failover: ${reason}\n`);
    return 1;
  }
  const runs = Number(values.runs);
  const only = values.only?.split(',');
  const chosen = scenarios.filter((s) => only === undefined || only.includes(s.id));
  const loadBefore = loadavg();
  const started = new Date();
  const results: Result[] = [];
  for (const s of chosen) {
    process.stderr.write(`${s.id}: ${s.title}\n`);
    results.push(await runScenario(s, runs));
  }
  const loadAfter = loadavg();
  const md = [
    `# Failover benchmark, ${started.toISOString()}`,
    '',
    `Commit ${commit()}; ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}, Linux ${release()}, Node ${process.version}; ` +
      `load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')} before, ${loadAfter.map((l) => l.toFixed(2)).join(' ')} after. ` +
      `${runs} runs per scenario. A client probes the VIP with a new TCP connection every 10 ms (where the scenario says so, a GET on it that must be ` +
      'answered below 500); an outage runs from the first ' +
      'probe that failed or took over 100 ms to the next one that did not; "holder gone" is the standby\'s log line that the ' +
      "holder's process died (ms resolution), \"first ARP on the wire\" the kernel's receive timestamp of the new holder's first " +
      "gratuitous ARP in the client's namespace (a packet socket), and \"new MAC\" the client's neighbour entry moving to the new holder (`ip -ts monitor neigh`).",
    '',
    table(results),
    '',
  ].join('\n');
  mkdirSync(values.out, { recursive: true });
  const file = join(values.out, `failover-${started.toISOString().replace(/[:.]/g, '-')}.md`);
  writeFileSync(file, md);
  process.stdout.write(`${md}\nwritten to ${file}\n`);
  return results.some((r) => r.error !== null) ? 2 : 0;
}

process.exitCode = await main();
