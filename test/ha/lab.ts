// The HA test bed: a private bridge with a client, two tandem nodes and a backend host
// (two backend servers), each in its own network namespace, all on 10.213.0.0/24.
//
//   client 10.213.0.2   lb1 10.213.0.11   lb2 10.213.0.12   backends 10.213.0.21, .22
//   VIPs   10.213.0.100 (vip-a, lb1 preferred)   10.213.0.101 (vip-b, lb2 preferred)
//
// An optional third node, lb3 10.213.0.13, prefers vip-c 10.213.0.102. With `etcd`, the
// nodes keep their leases in an etcd the test starts on the lab's bridge (etcd-lab.ts).
//
// Nodes run the real CLI (`tandem run -c FILE --node lbX`), with the VIP hook either
// in-process (`ha.hook`) or in a `tandem vip-agent` sidecar; the hook is the built-in
// announcer (`builtin`) or scripts/vip-hook.sh (`hook: 'script'`).
// The client probes a VIP with a new TCP connection every 10 ms; a watcher follows
// `ip monitor address` in every node namespace and records every moment two held a VIP.

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { Lab, run } from '../helpers/netns.ts';
import { sleep } from './support.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const CLI = join(ROOT, 'src/cli.ts');
const HOOK = join(ROOT, 'scripts/vip-hook.sh');
const NODE = process.execPath;

export const NODE_ADDR: Record<string, string> = { lb1: '10.213.0.11', lb2: '10.213.0.12' };
export const VIP_ADDR: Record<string, string> = { 'vip-a': '10.213.0.100', 'vip-b': '10.213.0.101', 'vip-c': '10.213.0.102' };
/** lb3's address: apart from NODE_ADDR, whose nodes the peer tests address directly. */
export const THIRD_NODE_ADDR = '10.213.0.13';
const nodeAddr = (id: string): string => (id === 'lb3' ? THIRD_NODE_ADDR : NODE_ADDR[id]);
/** A VIP's nodes from the most preferred down: its own node first, then the next ones in turn. */
const PRIORITIES = [150, 120, 100];
const HA_PORT = 7946;
export const LISTEN_PORT = 8080;
export const SECRET = 'netns-test-secret-0123456789';

export interface LabOptions {
  /** VIPs to configure (default: vip-a only, active-passive). */
  readonly vips?: readonly ('vip-a' | 'vip-b' | 'vip-c')[];
  /** The tandem nodes (default lb1 and lb2; lb3 makes three). vip-a prefers lb1, vip-b lb2, vip-c lb3. */
  readonly nodes?: readonly ('lb1' | 'lb2' | 'lb3')[];
  /** The backends' health checks (default every 500 ms, 300 ms timeout). */
  readonly healthCheck?: { readonly interval: string; readonly timeout: string };
  /** Keep the leases in etcd (`ha.store: etcd`) instead of the peer store. */
  readonly etcd?: { readonly endpoints: readonly string[]; readonly prefix: string } | null;
  readonly lease?: number;
  readonly renewEvery?: number;
  readonly preemptDelay?: number;
  /** Run the hook in a vip-agent sidecar instead of in-process. */
  readonly sidecar?: boolean;
  /** The built-in announcer (default) or scripts/vip-hook.sh. */
  readonly hook?: 'builtin' | 'script';
  /** How long the backends take to answer a request (default 0: at once), as an application does. */
  readonly backendDelayMs?: number;
}

export interface NodeProcess {
  readonly id: string;
  readonly proxy: ChildProcess;
  readonly agent: ChildProcess | null;
  output(): string;
}

/**
 * A probe slower than this counts as part of an outage in the figures (a client would
 * notice it); a probe that got no connection at all (refused, reset, or none within 1 s,
 * the first SYN retransmission) is a failure, whatever the load on the machine.
 */
export const SLOW_PROBE_MS = 100;

/** One outage: consecutive probes that failed or took longer than SLOW_PROBE_MS. */
export interface Outage {
  readonly from: number;
  readonly to: number;
  readonly ms: number;
  readonly failed: number;
}

export class HaLab {
  readonly lab: Lab;
  readonly opts: Required<LabOptions>;
  readonly ns: Record<string, string>;
  readonly macs: Record<string, string>;
  readonly dir: string;
  readonly configFile: string;
  readonly nodes: Map<string, NodeProcess>;
  private backends: ChildProcess | null;
  readonly watcher: Watcher;
  /** Run by destroy(), after the lab's processes are gone (for what a test put outside `dir`). */
  readonly cleanups: (() => void)[];

  private constructor(lab: Lab, opts: Required<LabOptions>, ns: Record<string, string>, macs: Record<string, string>, dir: string) {
    this.lab = lab;
    this.opts = opts;
    this.ns = ns;
    this.macs = macs;
    this.dir = dir;
    this.configFile = join(dir, 'tandem.yaml');
    this.nodes = new Map();
    this.backends = null;
    this.watcher = new Watcher(this);
    this.cleanups = [];
  }

  static async create(options: LabOptions = {}): Promise<HaLab> {
    const opts: Required<LabOptions> = {
      vips: options.vips ?? ['vip-a'],
      lease: options.lease ?? 1000,
      renewEvery: options.renewEvery ?? 200,
      preemptDelay: options.preemptDelay ?? 1000,
      sidecar: options.sidecar ?? false,
      hook: options.hook ?? 'builtin',
      nodes: options.nodes ?? ['lb1', 'lb2'],
      etcd: options.etcd ?? null,
      healthCheck: options.healthCheck ?? { interval: '500ms', timeout: '300ms' },
      backendDelayMs: options.backendDelayMs ?? 0,
    };
    const lab = await Lab.create();
    try {
      const ns: Record<string, string> = {
        client: await lab.host('c', '10.213.0.2/24'),
        lb1: await lab.host('lb1', `${NODE_ADDR.lb1}/24`),
        lb2: await lab.host('lb2', `${NODE_ADDR.lb2}/24`),
        backends: await lab.host('be', '10.213.0.21/24'),
      };
      if (opts.nodes.includes('lb3')) ns.lb3 = await lab.host('lb3', `${THIRD_NODE_ADDR}/24`);
      await lab.must(ns.backends, ['ip', 'addr', 'add', '10.213.0.22/24', 'dev', 'eth0']);
      const macs: Record<string, string> = {};
      for (const id of opts.nodes) macs[id] = await lab.mac(ns[id]);
      const h = new HaLab(lab, opts, ns, macs, mkdtempSync(join(tmpdir(), 'tandem-halab-')));
      writeFileSync(h.configFile, h.config());
      await h.startBackends();
      return h;
    } catch (err) {
      await lab.destroy();
      throw err;
    }
  }

  /** The config both nodes share. */
  config(): string {
    const o = this.opts;
    const vips = o.vips.map((name) => {
      // vip-a prefers lb1, vip-b lb2, vip-c lb3; after it, the nodes in turn (two nodes: 150 and 100).
      const first = Object.keys(VIP_ADDR).indexOf(name);
      const order = o.nodes.map((_, i) => o.nodes[(first + i) % o.nodes.length]);
      const levels = o.nodes.length === 2 ? [PRIORITIES[0], PRIORITIES[2]] : PRIORITIES;
      return {
        name,
        address: `${VIP_ADDR[name]}/24`,
        interface: 'eth0',
        priority: Object.fromEntries(order.map((id, i) => [id, levels[i]])),
        preempt: { delay: `${o.preemptDelay}ms` },
      };
    });
    const store = o.etcd === null
      ? { store: 'peer', nodes: this.haNodes(), secret: SECRET }
      : { store: 'etcd', etcd: { endpoints: [...o.etcd.endpoints], prefix: o.etcd.prefix }, nodes: this.haNodes() };
    return stringify({
      listeners: [{ name: 'web', address: `0.0.0.0:${LISTEN_PORT}` }],
      routes: [{ name: 'all', match: { pathPrefix: '/' }, pool: 'web' }],
      pools: {
        web: {
          backends: [
            { name: 'b1', url: `http://10.213.0.21:${LISTEN_PORT}` },
            { name: 'b2', url: `http://10.213.0.22:${LISTEN_PORT}` },
          ],
          healthCheck: { path: '/', ...o.healthCheck },
        },
      },
      admin: { address: '127.0.0.1:9901' },
      // One worker per node: these tests are about the lease path (the cluster tests cover
      // workers), and four nodes' worth of processes slow every start on a busy machine.
      workers: 1,
      shutdownTimeout: '2s',
      ha: {
        ...store,
        lease: { duration: `${o.lease}ms`, renewEvery: `${o.renewEvery}ms` },
        ...(o.sidecar ? { agent: true } : { hook: this.hookArg() }),
        hookTimeout: '3s',
        garp: { count: 3, interval: '100ms', refresh: '60s' },
        vips,
      },
    });
  }

  private haNodes(): Record<string, { address: string }> {
    return Object.fromEntries(this.opts.nodes.map((id) => [id, { address: `${nodeAddr(id)}:${HA_PORT}` }]));
  }

  private async startBackends(): Promise<void> {
    const script = `
      const http = require('node:http');
      for (const host of ['10.213.0.21', '10.213.0.22']) {
        http.createServer((req, res) => setTimeout(() => res.end('backend ' + host + '\\n'), ${this.opts.backendDelayMs})).listen(${LISTEN_PORT}, host);
      }`;
    this.backends = this.lab.spawn(this.ns.backends, [NODE, '-e', script]);
    for (let i = 0; i < 100; i++) {
      const r = await this.lab.exec(this.ns.client, ['bash', '-c', `exec 3<>/dev/tcp/10.213.0.22/${LISTEN_PORT}`]);
      if (r.code === 0) return;
      await sleep(30);
    }
    throw new Error('backends did not come up');
  }

  private hookArg(): string {
    return this.opts.hook === 'script' ? HOOK : 'builtin';
  }

  /** Starts tandem (and its sidecar) on node `id`; resolves once HA competes. */
  async start(id: string): Promise<NodeProcess> {
    const env = { ...process.env, TANDEM_RUN_DIR: join(this.dir, 'run'), NODE_OPTIONS: '' };
    let out = '';
    const proxy = this.lab.spawn(this.ns[id], [NODE, CLI, 'run', '-c', this.configFile, '--node', id], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    proxy.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    proxy.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    let agent: ChildProcess | null = null;
    if (this.opts.sidecar) {
      agent = this.lab.spawn(this.ns[id], [NODE, CLI, 'vip-agent', '--admin', 'http://127.0.0.1:9901', '--hook', this.hookArg()], {
        env: { ...env, TANDEM_GARP_COUNT: '3', TANDEM_GARP_INTERVAL: '100' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      agent.stdout!.on('data', (c: Buffer) => (out += `[agent] ${c}`));
      agent.stderr!.on('data', (c: Buffer) => (out += `[agent] ${c}`));
    }
    const node: NodeProcess = { id, proxy, agent, output: () => out };
    this.nodes.set(id, node);
    const t0 = performance.now();
    while (!/ha: node \S+ competing/.test(out)) {
      if (proxy.exitCode !== null) throw new Error(`tandem ${id} exited with ${proxy.exitCode}:\n${out}`);
      // A deadline, not a figure: a busy machine may take many seconds to start Node processes.
      if (performance.now() - t0 > 90_000) throw new Error(`tandem ${id} did not start HA:\n${out}`);
      await sleep(20);
    }
    return node;
  }

  /** Signals a node's proxy (and, with `agent`, its sidecar); resolves when the proxy exited. */
  async signal(id: string, signal: NodeJS.Signals, opts: { agent?: boolean } = {}): Promise<void> {
    const n = this.nodes.get(id);
    if (n === undefined) return;
    const gone = n.proxy.exitCode !== null || n.proxy.signalCode !== null;
    const exited = gone ? Promise.resolve() : new Promise<void>((r) => n.proxy.once('exit', () => r()));
    // `ip netns exec` execs the command, so the child's pid is tandem's own.
    n.proxy.kill(signal);
    if (opts.agent && n.agent !== null) n.agent.kill(signal);
    await exited;
  }

  /**
   * Sends `signal` to every tandem process on node `id` (the proxy and its workers, not a
   * sidecar), found in the node's namespace by their command line; returns their pids.
   */
  async signalAll(id: string, signal: NodeJS.Signals): Promise<number[]> {
    const pids = (await run('ip', ['netns', 'pids', this.ns[id]])).stdout.split('\n').map(Number).filter((p) => p > 0);
    const hit: number[] = [];
    for (const pid of pids) {
      let cmd = '';
      try {
        cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      } catch {
        continue;
      }
      // The proxy runs src/cli.ts, its workers src/dataplane/worker-entry.ts.
      if (!cmd.includes(join(ROOT, 'src/')) || cmd.includes(' vip-agent ')) continue;
      try {
        process.kill(pid, signal);
        hit.push(pid);
      } catch {
        // gone meanwhile
      }
    }
    if (hit.length === 0) throw new Error(`no tandem process found on ${id}`);
    return hit;
  }

  /** Nodes whose eth0 holds `vip` right now, read from `ip addr`. */
  async holders(vip: string): Promise<string[]> {
    const out: string[] = [];
    for (const id of this.opts.nodes) {
      const r = await this.lab.exec(this.ns[id], ['ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0']);
      if (r.stdout.includes(` ${VIP_ADDR[vip]}/24 `)) out.push(id);
    }
    return out;
  }

  /** The MAC the client's neighbour table has for `vip`, or null. */
  async clientMac(vip: string): Promise<string | null> {
    const r = await this.lab.exec(this.ns.client, ['ip', 'neigh', 'show', VIP_ADDR[vip], 'dev', 'eth0']);
    return /lladdr ([0-9a-f:]+)/.exec(r.stdout)?.[1] ?? null;
  }

  /** Waits until the client's neighbour entry for `vip` has `id`'s MAC (its gratuitous ARP arrived). */
  async clientPointsAt(vip: string, id: string, ms: number): Promise<void> {
    const t0 = performance.now();
    let mac: string | null = null;
    while ((mac = await this.clientMac(vip)) !== this.macs[id]) {
      if (performance.now() - t0 > ms) throw new Error(`the client still has ${mac} for ${vip}, not ${id}'s ${this.macs[id]}\n${this.logs()}`);
      await sleep(20);
    }
  }

  /** An HTTP GET from the client to `vip`: status and body. */
  async get(vip: string): Promise<{ status: number; body: string }> {
    const r = await this.fetchIn(this.ns.client, `http://${VIP_ADDR[vip]}:${LISTEN_PORT}/`);
    return r;
  }

  /** GET `url` from inside `ns` (with Node's fetch: no curl needed). */
  async fetchIn(ns: string, url: string): Promise<{ status: number; body: string }> {
    const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(5000) }).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => process.stdout.write(JSON.stringify({ status: 0, body: String(e) })))`;
    const r = await this.lab.exec(ns, [NODE, '-e', script]);
    return JSON.parse(r.stdout || '{"status":0,"body":""}') as { status: number; body: string };
  }

  /** Waits until `id` has `vip` on its interface, whoever else still has it; resolves with the ms it took. */
  async taken(vip: string, id: string, ms: number): Promise<number> {
    const t0 = performance.now();
    while (!(await this.holders(vip)).includes(id)) {
      if (performance.now() - t0 > ms) throw new Error(`${id} did not take ${vip}\n${this.logs()}`);
      await sleep(20);
    }
    return performance.now() - t0;
  }

  /** Waits until exactly `id` has `vip` on its interface and the client's ARP entry points at it. */
  async settle(vip: string, id: string, ms = 15_000): Promise<number> {
    const t0 = performance.now();
    for (;;) {
      const h = await this.holders(vip);
      if (h.length === 1 && h[0] === id) return performance.now() - t0;
      if (performance.now() - t0 > ms) throw new Error(`${vip} did not settle on ${id} (holders: ${h.join(',') || 'none'})\n${this.logs()}`);
      await sleep(50);
    }
  }

  /**
   * Starts the client's probe loop against `vip`. With `http`, each probe is a GET on its
   * new connection and counts once answered (below 500): a frozen holder's kernel still
   * accepts connections, so only an answer shows that someone serves.
   */
  probe(vip: string, opts: { http?: boolean } = {}): Prober {
    return new Prober(this, vip, opts.http ?? false);
  }

  /** Cuts (or restores) a node's link at the bridge. */
  async link(id: string, up: boolean): Promise<void> {
    const port = await this.lab.bridgePort(this.ns[id]);
    await this.lab.must(this.lab.bridgeNs, ['ip', 'link', 'set', port, up ? 'up' : 'down']);
    this.watcher.setLink(id, up);
  }

  /** Drops (or lets through again) the HA adverts between the nodes: a partition of the lease protocol only. */
  async partition(on: boolean): Promise<void> {
    for (const id of ['lb1', 'lb2']) {
      if (on) {
        await this.lab.must(this.ns[id], ['nft', 'add table inet tndpart']);
        await this.lab.must(this.ns[id], ['nft', 'add chain inet tndpart in { type filter hook input priority 0 ; }']);
        await this.lab.must(this.ns[id], ['nft', `add rule inet tndpart in udp dport ${HA_PORT} drop`]);
      } else {
        await this.lab.must(this.ns[id], ['nft', 'delete table inet tndpart']);
      }
    }
  }

  /**
   * Every hook run the nodes (or their sidecars) logged, with how long it took: what
   * "one hook run" means on this machine right now, busy or idle.
   */
  hookRuns(): { node: string; vip: string; state: string; ms: number }[] {
    const runs: { node: string; vip: string; state: string; ms: number }[] = [];
    for (const n of this.nodes.values()) {
      for (const m of n.output().matchAll(/vip hook: (\S+) (MASTER|BACKUP|FAULT|STOP) .*? (?:done in|after) (\d+) ms/g)) {
        runs.push({ node: n.id, vip: m[1], state: m[2], ms: Number(m[3]) });
      }
    }
    return runs;
  }

  /**
   * How long both nodes may hold a VIP: the successor's MASTER hook and the predecessor's
   * BACKUP hook as long as the slowest run seen, plus an advert interval, and never less
   * than `floor`. On an idle machine that is the floor; on a busy one, hooks (new
   * processes) slow down, and so may the overlap, without anything being wrong.
   */
  overlapAllowed(floor: number): number {
    const longest = Math.max(0, ...this.hookRuns().map((r) => r.ms));
    return Math.max(floor, 2 * longest + this.opts.renewEvery);
  }

  /** How often `id` has logged that a peer holding a VIP died (crash detection, not lease expiry). */
  deathsSeen(id: string): number {
    return [...(this.nodes.get(id)?.output() ?? '').matchAll(/holder \S+ died; its lease is void/g)].length;
  }

  /** Drops the adverts sent to a node's own address only: what still arrives came by multicast. */
  async dropUnicastAdverts(on: boolean): Promise<void> {
    for (const id of ['lb1', 'lb2']) {
      if (on) {
        await this.lab.must(this.ns[id], ['nft', 'add table inet tnduni']);
        await this.lab.must(this.ns[id], ['nft', 'add chain inet tnduni in { type filter hook input priority 0 ; }']);
        await this.lab.must(this.ns[id], ['nft', `add rule inet tnduni in ip daddr ${NODE_ADDR[id]} udp dport ${HA_PORT} drop`]);
      } else {
        await this.lab.must(this.ns[id], ['nft', 'delete table inet tnduni']);
      }
    }
  }

  logs(): string {
    return [...this.nodes.values()].map((n) => `---- ${n.id} ----\n${n.output()}`).join('\n');
  }

  async destroy(): Promise<void> {
    this.watcher.stop();
    for (const n of this.nodes.values()) {
      n.proxy.kill('SIGKILL');
      n.agent?.kill('SIGKILL');
    }
    this.backends?.kill('SIGKILL');
    await this.lab.destroy();
    for (const f of this.cleanups) f();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Follows `ip monitor address` in every node namespace and records every span during
 * which two nodes (or more) whose link is up had the same VIP.
 */
export class Watcher {
  private readonly h: HaLab;
  private monitors: ChildProcess[];
  /** vip -> node -> has it */
  private readonly has: Map<string, Map<string, boolean>>;
  private readonly bothSince: Map<string, number>;
  readonly overlaps: { vip: string; ms: number; at: number }[];
  readonly linkUp: Map<string, boolean>;

  constructor(h: HaLab) {
    this.h = h;
    this.monitors = [];
    this.has = new Map();
    this.bothSince = new Map();
    this.overlaps = [];
    this.linkUp = new Map(h.opts.nodes.map((id) => [id, true]));
  }

  async start(): Promise<void> {
    for (const id of this.h.opts.nodes) {
      const m = this.h.lab.spawn(this.h.ns[id], ['ip', '-o', 'monitor', 'address']);
      let buf = '';
      m.stdout!.on('data', (c: Buffer) => {
        buf += c.toString();
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          for (const [vip, addr] of Object.entries(VIP_ADDR)) {
            if (line.includes(` ${addr}/24 `)) this.set(vip, id, !line.startsWith('Deleted'));
          }
        }
      });
      this.monitors.push(m);
    }
    await sleep(100);
    for (const vip of Object.keys(VIP_ADDR)) {
      const holders = await this.h.holders(vip);
      for (const id of this.h.opts.nodes) this.set(vip, id, holders.includes(id));
    }
  }

  /**
   * Records a node's link state. Both holders count again from the moment a link comes
   * back, since only then can clients reach both, so a node that keeps a VIP it should
   * give up after a link returns is caught.
   */
  setLink(id: string, up: boolean): void {
    this.linkUp.set(id, up);
    for (const [vip, m] of this.has) this.set(vip, id, m.get(id) === true);
  }

  private set(vip: string, id: string, value: boolean): void {
    let m = this.has.get(vip);
    if (m === undefined) this.has.set(vip, (m = new Map()));
    m.set(id, value);
    const both = [...m].filter(([node, held]) => held && this.linkUp.get(node) !== false).length >= 2;
    const since = this.bothSince.get(vip);
    if (both && since === undefined) this.bothSince.set(vip, performance.now());
    if (!both && since !== undefined) {
      this.overlaps.push({ vip, ms: performance.now() - since, at: since });
      this.bothSince.delete(vip);
    }
  }

  /** The longest time both nodes held one VIP, an ongoing overlap included. */
  longest(): number {
    let max = 0;
    for (const o of this.overlaps) max = Math.max(max, o.ms);
    for (const since of this.bothSince.values()) max = Math.max(max, performance.now() - since);
    return max;
  }

  stop(): void {
    for (const m of this.monitors) m.kill('SIGKILL');
    this.monitors = [];
  }
}

/** A probe result: start time (performance clock of the test), ok, and how long it took. */
interface ProbeResult {
  readonly at: number;
  readonly ok: boolean;
  readonly ms: number;
  /** Why a probe failed: `timeout`, an error code such as `ECONNRESET`, or `status-503`. */
  readonly why: string;
}

/** New TCP connections to a VIP from the client (with `http`, a GET on each), one every 10 ms, each given up after 1 s. */
export class Prober {
  private readonly child: ChildProcess;
  readonly results: ProbeResult[];
  private readonly offset: number;
  private readonly done: Promise<void>;

  constructor(h: HaLab, vip: string, http = false) {
    this.results = [];
    // The child reports times on the wall clock's epoch in ms with sub-ms precision; map them to ours.
    this.offset = performance.timeOrigin;
    const script = `
      const net = require('node:net');
      const http = require('node:http');
      const now = () => performance.timeOrigin + performance.now();
      const target = { host: ${JSON.stringify(VIP_ADDR[vip])}, port: ${LISTEN_PORT} };
      const tick = () => {
        const at = now();
        const s = ${http} ? http.get({ ...target, path: '/', agent: false }, (res) => {
          res.resume();
          res.once('end', () => end(res.statusCode < 500, 'status-' + res.statusCode));
        }) : net.connect(target);
        let done = false;
        const end = (ok, why) => {
          if (done) return;
          done = true;
          clearTimeout(t);
          s.destroy();
          process.stdout.write(at.toFixed(2) + ' ' + (ok ? 1 : 0) + ' ' + (now() - at).toFixed(2) + ' ' + why + '\\n');
        };
        const t = setTimeout(() => end(false, 'timeout'), 1000);
        if (!${http}) s.once('connect', () => end(true, '-'));
        s.once('error', (err) => end(false, err.code ?? 'error'));
      };
      setInterval(tick, 10);
      process.on('SIGTERM', () => setTimeout(() => process.exit(0), 1100));
    `;
    this.child = h.lab.spawn(h.ns.client, [NODE, '-e', script]);
    let buf = '';
    this.child.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const [at, ok, ms, why] = buf.slice(0, nl).split(' ');
        buf = buf.slice(nl + 1);
        this.results.push({ at: Number(at) - this.offset, ok: ok === '1', ms: Number(ms), why });
      }
    });
    this.done = new Promise((r) => this.child.once('exit', () => r()));
  }

  /** Stops probing; resolves once every probe in flight has reported. */
  async stop(): Promise<void> {
    this.child.kill('SIGTERM');
    await this.done;
    this.results.sort((a, b) => a.at - b.at);
  }

  /** Probes that got no connection: refused, reset, or none within 1 s. */
  failures(): ProbeResult[] {
    return this.results.filter((r) => !r.ok);
  }

  /** Probes that connected, but only after SLOW_PROBE_MS (a busy machine, or a SYN that waited on ARP). */
  slow(): ProbeResult[] {
    return this.results.filter((r) => r.ok && r.ms > SLOW_PROBE_MS);
  }

  /** Outage windows: from the first bad probe to the next good one after the last bad one. */
  outages(): Outage[] {
    const out: Outage[] = [];
    let start: ProbeResult | null = null;
    let failed = 0;
    for (const r of this.results) {
      const bad = !r.ok || r.ms > SLOW_PROBE_MS;
      if (bad) {
        if (start === null) start = r;
        failed++;
      } else if (start !== null) {
        out.push({ from: start.at, to: r.at, ms: r.at - start.at, failed });
        start = null;
        failed = 0;
      }
    }
    if (start !== null) out.push({ from: start.at, to: Infinity, ms: Infinity, failed });
    return out;
  }

  /**
   * Resolves once a probe started at or after `from` (the test's performance clock)
   * connected: the prober is a Node process that a busy machine may take a second to
   * start, and "the client gets through" is an event to wait for, not a sleep.
   */
  async connectedSince(from: number, ms = 15_000): Promise<void> {
    const t0 = performance.now();
    while (!this.results.some((r) => r.ok && r.at >= from)) {
      if (performance.now() - t0 > ms) throw new Error(`no probe connected in ${ms} ms (${this.results.length} probes so far)`);
      await sleep(10);
    }
  }

  /** Probes started in [from, to) (the test's performance clock) that connected. */
  okBetween(from: number, to: number): number {
    return this.results.filter((r) => r.ok && r.at >= from && r.at < to).length;
  }

  /** Probes that connected. */
  successes(): number {
    return this.results.filter((r) => r.ok).length;
  }
}
