// Network namespaces for tests that need real interfaces, ARP and addresses that move:
// a private bridge in its own namespace, and one namespace per host plugged into it with
// a veth pair. Nothing is created in the test runner's own namespace, so the private
// addresses used here (10.213.x.y) never reach a real network, and two test files can
// use the same addresses at once.
//
//   const skip = netnsUnavailable();                 // a reason, or null
//   const lab = await Lab.create();                  // sweeps stale tnd-* namespaces first
//   const client = await lab.host('client', '10.213.0.2/24');
//   await lab.exec(client, ['ip', 'neigh']);
//   await lab.destroy();                             // kills what runs inside, deletes all
//
// Names are `tnd-<pid>-<n>-<role>`: the pid lets a later run remove what a killed run left.

import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

let cachedReason: string | null | undefined;

/** Why network namespace tests cannot run here, or null when they can. */
export function netnsUnavailable(): string | null {
  if (cachedReason !== undefined) return cachedReason;
  cachedReason = probe();
  return cachedReason;
}

function probe(): string | null {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespace tests need root (run as root, or in a container with CAP_NET_ADMIN and CAP_SYS_ADMIN)';
  const name = `tnd-${process.pid}-probe`;
  try {
    execFileSync('ip', ['netns', 'add', name], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', name], { stdio: 'pipe' });
  } catch (err) {
    return `\`ip netns\` is not usable here: ${(err as Error).message.split('\n')[0]}`;
  }
  return null;
}

/** Runs a command in the test runner's namespace; resolves with its exit code and output. */
export function run(cmd: string, args: readonly string[], timeoutMs = 10_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      // execFile's error carries the exit code as a number, or a string such as ENOENT.
      const raw = (err as { code?: unknown } | null)?.code;
      const code = err === null ? 0 : typeof raw === 'number' ? raw : 127;
      resolve({ code, stdout, stderr });
    });
  });
}

async function must(cmd: string, args: readonly string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Deletes tnd-* namespaces whose creating process is gone (a run that was killed). */
export async function sweepStale(): Promise<string[]> {
  const out = await run('ip', ['netns', 'list']);
  const removed: string[] = [];
  for (const line of out.stdout.split('\n')) {
    const name = line.split(' ')[0];
    const m = /^tnd-(\d+)-/.exec(name);
    if (m === null) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || alive(pid)) continue;
    await removeNamespace(name);
    removed.push(name);
  }
  return removed;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function removeNamespace(name: string): Promise<void> {
  const pids = await run('ip', ['netns', 'pids', name]);
  for (const p of pids.stdout.split('\n').map((s) => Number(s.trim())).filter((n) => n > 0)) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  // A process killed a moment ago may still hold the namespace; the delete still unmounts it.
  await run('ip', ['netns', 'del', name]);
}

let labCounter = 0;

/** One private L2 segment with hosts on it. */
export class Lab {
  readonly prefix: string;
  readonly bridgeNs: string;
  private readonly namespaces: string[];
  private readonly children: Set<ChildProcess>;
  private ports: number;

  private constructor(prefix: string) {
    this.prefix = prefix;
    this.bridgeNs = `${prefix}-br`;
    this.namespaces = [];
    this.children = new Set();
    this.ports = 0;
  }

  /** Sweeps stale namespaces, then makes the bridge namespace with bridge `br0`. */
  static async create(): Promise<Lab> {
    await sweepStale();
    const lab = new Lab(`tnd-${process.pid}-${++labCounter}`);
    try {
      await lab.namespace(lab.bridgeNs);
      await lab.must(lab.bridgeNs, ['ip', 'link', 'add', 'br0', 'type', 'bridge', 'forward_delay', '0']);
      await lab.must(lab.bridgeNs, ['ip', 'link', 'set', 'br0', 'up']);
    } catch (err) {
      await lab.destroy();
      throw err;
    }
    return lab;
  }

  /**
   * A host: namespace `<prefix>-<role>` with `eth0` (address `cidr`) plugged into the
   * bridge, and loopback up. Returns the namespace name.
   */
  async host(role: string, cidr: string): Promise<string> {
    const ns = `${this.prefix}-${role}`;
    await this.namespace(ns);
    const port = `p${++this.ports}`;
    await must('ip', ['link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', port, 'netns', this.bridgeNs]);
    await this.must(this.bridgeNs, ['ip', 'link', 'set', port, 'master', 'br0', 'up']);
    await this.must(ns, ['ip', 'addr', 'add', cidr, 'dev', 'eth0']);
    await this.must(ns, ['ip', 'link', 'set', 'eth0', 'up']);
    return ns;
  }

  /** The bridge-side port of a host, for cutting its link (`ip link set … down`). */
  async bridgePort(ns: string): Promise<string> {
    // The peer of eth0 in `ns` is the bridge port whose ifindex eth0 names as its link.
    const link = await this.must(ns, ['ip', '-o', 'link', 'show', 'eth0']);
    const peerIndex = /eth0@if(\d+)/.exec(link)?.[1];
    const ports = await this.must(this.bridgeNs, ['ip', '-o', 'link', 'show']);
    for (const line of ports.split('\n')) {
      const m = /^(\d+): ([^@:]+)/.exec(line);
      if (m !== null && m[1] === peerIndex) return m[2];
    }
    throw new Error(`no bridge port found for ${ns}`);
  }

  /** Runs `cmd` inside `ns`. */
  exec(ns: string, cmd: readonly string[], timeoutMs = 10_000): Promise<ExecResult> {
    return run('ip', ['netns', 'exec', ns, ...cmd], timeoutMs);
  }

  /** Runs `cmd` inside `ns`; throws on a non-zero exit. */
  async must(ns: string, cmd: readonly string[]): Promise<string> {
    const r = await this.exec(ns, cmd);
    if (r.code !== 0) throw new Error(`[${ns}] ${cmd.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
    return r.stdout;
  }

  /** Starts a long-running process inside `ns`; destroy() kills it if the test did not. */
  spawn(ns: string, cmd: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, ...cmd], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.children.add(child);
    child.once('exit', () => this.children.delete(child));
    return child;
  }

  /** The MAC address of `ifname` in `ns`. */
  async mac(ns: string, ifname = 'eth0'): Promise<string> {
    const out = await this.must(ns, ['cat', `/sys/class/net/${ifname}/address`]);
    return out.trim();
  }

  /** Kills everything started inside the lab's namespaces and deletes them. */
  async destroy(): Promise<void> {
    for (const c of this.children) c.kill('SIGKILL');
    for (const ns of [...this.namespaces].reverse()) await removeNamespace(ns);
    this.namespaces.length = 0;
  }

  private async namespace(ns: string): Promise<void> {
    await must('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    await this.must(ns, ['ip', 'link', 'set', 'lo', 'up']);
  }
}
