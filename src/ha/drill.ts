// `tandem drill`: a planned disaster-recovery drill of a running pair. For each VIP it
// checks that the holder and its peer are ready, hands the VIP over (a release through the
// holder's admin API), and hands it back (a release on the peer, or the preferred node's
// preemption when the config has it), while a prober opens a new connection to the VIP
// every 10 ms. It prints what each move took and cost; exit 0 only when every VIP moved
// both ways with no failed probe.

import { setTimeout as sleep } from 'node:timers/promises';
import { TandemError, errors } from '../errors.ts';
import { masters, planVip, readViews, resolveSetup, type DrillNode, type VipPlan, type VipPolicy } from './drill-plan.ts';
import { Prober, describeTarget, type ProbeResult, type ProbeTarget } from './probe.ts';

export interface DrillOptions {
  readonly config: string | null;
  readonly admin: readonly string[];
  readonly token: string | null;
  /** Probe this URL (an HTTP GET on a new connection) instead of a TCP connect to the VIP. */
  readonly url: string | null;
  /** Only these VIPs; empty: every VIP. */
  readonly vips: readonly string[];
  readonly out?: (line: string) => void;
}

/**
 * Probe interval and deadline. A probe with no answer after the deadline failed; it is just
 * under TCP's first SYN retransmission (1 s), so a SYN lost to a stale ARP entry counts as
 * failed, while a probe slowed by a busy host does not. Slow probes (over SLOW ms) are
 * counted apart.
 */
const PROBE_EVERY = 10;
const PROBE_DEADLINE = 900;
const SLOW = 100;
/** Probing before a move starts, and after it is seen done (late ARP flips show here). */
const BASELINE = 100;
const SETTLE = 300;
/** How often the nodes' status is read during a move. */
const POLL = 20;

export interface MoveResult {
  readonly from: string;
  /** Who holds the VIP when the move ended; null when no single node held it. */
  readonly to: string | null;
  readonly ok: boolean;
  readonly ms: number;
  /** When the new holder first said it holds the VIP (ms after the start), before the old one let go. */
  readonly servingMs: number | null;
  readonly how: string;
  readonly probes: number;
  readonly failed: readonly ProbeResult[];
  /** Probes that succeeded but took longer than SLOW ms. */
  readonly slow: number;
  /** Start of the move on the performance clock, for probe times relative to it. */
  readonly t0: number;
  readonly error: string | null;
}

export interface VipReport {
  readonly vip: string;
  readonly notReady: readonly string[];
  readonly handover: MoveResult | null;
  readonly failback: MoveResult | null;
  readonly ok: boolean;
}

/** Runs the drill; resolves with the exit code (0: every VIP moved both ways, no failed probe; 2: otherwise). */
export async function runDrill(opts: DrillOptions): Promise<number> {
  const out = opts.out ?? ((line: string) => process.stdout.write(line + '\n'));
  let url: URL | null = null;
  if (opts.url !== null) {
    try {
      url = new URL(opts.url);
    } catch {
      throw new TandemError(errors.ARGUMENTS, `--url ${opts.url}: not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TandemError(errors.ARGUMENTS, `--url ${opts.url}: not an http(s) URL`);
  }
  const setup = await resolveSetup(opts);
  const first = await readViews(setup.nodes);
  const known = new Set<string>();
  for (const v of first) for (const vip of v.status?.vips ?? []) known.add(vip.name);
  for (const name of setup.policies.keys()) known.add(name);
  // An unknown name is a mistake in the arguments only when some node could say which
  // VIPs exist; when none can be read (down, or a refused token), that is the failure.
  if (first.some((v) => v.status !== null)) {
    for (const name of opts.vips) if (!known.has(name)) throw new TandemError(errors.ARGUMENTS, `--vip ${name}: no such VIP (known: ${[...known].join(', ') || 'none'})`);
  }
  const names = opts.vips.length > 0 ? [...opts.vips] : [...known].sort();
  out(`tandem drill: ${first.map((v) => `${v.node.id} ${v.node.client.url}`).join(', ')}; VIPs: ${names.join(', ') || 'none'}`);
  if (names.length === 0) {
    out('drill FAILED: no VIP to drill (no node could be read, or none has VIPs)');
    for (const v of first) if (v.error !== null) out(`  ${v.node.client.url} cannot be read: ${v.error}`);
    return 2;
  }

  const reports: VipReport[] = [];
  for (const vip of names) {
    const report = await drillVip(setup.nodes, vip, url, setup.policies.get(vip) ?? null, out);
    reports.push(report);
  }
  const failed = reports.filter((r) => !r.ok);
  out(failed.length === 0
    ? `drill ok: ${reports.length} VIP(s) moved both ways with no failed probe`
    : `drill FAILED: ${failed.map((r) => r.vip).join(', ')}`);
  return failed.length === 0 ? 0 : 2;
}

async function drillVip(nodes: DrillNode[], vip: string, url: URL | null, policy: VipPolicy | null, out: (line: string) => void): Promise<VipReport> {
  const plan = planVip(await readViews(nodes), vip, url);
  if (plan.notReady.length > 0 || plan.holder === null || plan.peer === null || plan.target === null) {
    out(`${vip}: not ready, left where it is`);
    for (const line of plan.notReady) out(`  not ready: ${line}`);
    return { vip, notReady: plan.notReady, handover: null, failback: null, ok: false };
  }
  const holder = plan.holder;
  const client = (id: string) => nodes.find((n) => n.id === id)!.client;
  const moveTimeout = Math.max(5000, 5 * plan.leaseDuration);
  out(`${vip}: held by ${holder}, ${plan.peer} ready; probing ${describeTarget(plan.target)} every ${PROBE_EVERY} ms`);

  const handover = await move(nodes, plan, holder, null, moveTimeout, 'release on ' + holder, () => client(holder).release(vip).then((released) => {
    if (!released) throw new Error(`${holder} did not hold ${vip} any more`);
  }));
  out(line('handover', handover));
  if (handover.to === null || handover.to === holder || !handover.ok) {
    out(`  ${vip} did not move: ${handover.error ?? `no single new holder within ${moveTimeout} ms`}`);
    return { vip, notReady: [], handover, failback: null, ok: false };
  }

  const peer = handover.to;
  // The preferred node takes its VIP back by itself when the config says it preempts.
  const preempts = policy !== null && policy.preempt && (policy.priority[holder] ?? 0) > (policy.priority[peer] ?? 0);
  const failback = preempts
    ? await move(nodes, plan, peer, holder, policy.preemptDelay + 2 * plan.leaseDuration + moveTimeout, `preemption by ${holder} after ${policy.preemptDelay} ms`, async () => {})
    : await move(nodes, plan, peer, holder, moveTimeout, 'release on ' + peer, async () => {
      // 404: the peer gave it up already (a preemption came first); the wait below decides.
      await client(peer).release(vip);
    });
  out(line('failback', failback));
  if (failback.to !== holder) out(`  ${vip} is now held by ${failback.to ?? 'no single node'}, not ${holder}: ${failback.error ?? 'it did not come back in time'}`);
  const ok = handover.failed.length === 0 && failback.ok && failback.to === holder && failback.failed.length === 0;
  return { vip, notReady: [], handover, failback, ok };
}

/**
 * Runs `act` while probing, and waits until `expect` (or, when null, any node but `from`)
 * is the only node that says it holds the VIP. The time is from `act` to that moment.
 */
async function move(nodes: DrillNode[], plan: VipPlan, from: string, expect: string | null, timeout: number, how: string, act: () => Promise<void>): Promise<MoveResult> {
  const target = plan.target as ProbeTarget;
  const prober = new Prober(target, { every: PROBE_EVERY, deadline: PROBE_DEADLINE, max: Math.ceil((BASELINE + timeout + SETTLE) / PROBE_EVERY) + 10 });
  await sleep(BASELINE);
  const t0 = performance.now();
  let error: string | null = null;
  const acting = act().catch((err: Error) => {
    error = err.message;
  });
  let to: string | null = null;
  let servingMs: number | null = null;
  let done = false;
  while (!done && performance.now() - t0 < timeout && error === null) {
    const views = await readViews(nodes);
    const held = masters(views, plan.vip);
    const fromView = views.find((v) => v.node.id === from);
    const fromLetGo = fromView?.status != null && !held.includes(from);
    to = held.length === 1 ? held[0] : null;
    if (servingMs === null && held.some((id) => id !== from && (expect === null || id === expect))) servingMs = performance.now() - t0;
    done = fromLetGo && to !== null && (expect === null || to === expect);
    if (!done) await sleep(POLL);
  }
  const ms = performance.now() - t0;
  await acting;
  if (done) await sleep(SETTLE);
  const results = await prober.stop();
  return { from, to, ok: done, ms, servingMs, how, probes: results.length, failed: prober.failures(), slow: results.filter((r) => r.ok && r.ms > SLOW).length, t0, error };
}

function line(what: string, m: MoveResult): string {
  const serving = m.servingMs === null ? '' : `, serving from ${Math.round(m.servingMs)} ms`;
  const moved = m.ok ? `${m.from} -> ${m.to} in ${Math.round(m.ms)} ms${serving}` : `${m.from} -> ? (gave up after ${Math.round(m.ms)} ms)`;
  let s = `  ${what.padEnd(8)} ${moved} (${m.how}); ${m.failed.length} of ${m.probes} probes failed, ${m.slow} slower than ${SLOW} ms`;
  if (m.failed.length > 0) {
    const shown = m.failed.slice(0, 5).map((f) => `${Math.round(f.at - m.t0)} ms ${f.error}`);
    s += `: ${shown.join(', ')}${m.failed.length > 5 ? ', ...' : ''}`;
  }
  return s;
}
