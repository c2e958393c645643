// Child processes of the benchmark: every server (backend, proxies, tandem, HAProxy,
// nginx) runs in its own process, so none of them shares an event loop with another or
// with the load generator. A Node service announces itself with one JSON line on stdout,
// `{"port": N}` or `{"ports": [...]}`; tandem itself is recognised by its log lines, and
// a native server by its port accepting connections.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';

/** A running child process of the benchmark. */
export interface Service {
  readonly child: ChildProcess;
  /** What the child announced, or matched from its log. */
  readonly info: Record<string, unknown>;
  /** Everything it wrote so far (the last 64 KiB). */
  output(): string;
  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnOptions {
  /** How long the child may take to announce itself. */
  timeoutMs?: number;
  /** Matches the child's output when it is ready; group 1.. become info.match. Default: a JSON line. */
  ready?: RegExp;
  /** Ready once this port of 127.0.0.1 accepts a connection (for servers that print nothing). */
  listening?: number;
  /** The executable; default the Node running this process, `args` then start with a script. */
  command?: string;
  env?: Record<string, string>;
}

const KEEP = 64 * 1024;

/** How often a `listening` port is tried while the child starts. */
const PROBE_MS = 50;

/** Starts `node args...` (or `command args...`) and waits until it says, or shows, it is ready. */
export function spawnService(args: string[], opts: SpawnOptions = {}): Promise<Service> {
  const command = opts.command ?? process.execPath;
  const child = spawn(command, args, {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const service: Service = {
    child,
    info: {},
    output: () => out,
    async stop(graceMs = 3000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  return new Promise<Service>((resolve, reject) => {
    let settled = false;
    const timeoutMs = opts.timeoutMs ?? 20_000;
    const fail = (why: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void service.stop(500);
      reject(new Error(`${[command, ...args].join(' ')}: ${why}; output:\n${out}`));
    };
    const succeed = (info: Record<string, unknown>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      Object.assign(service.info, info);
      resolve(service);
    };
    const timer = setTimeout(() => fail(`not ready within ${timeoutMs} ms`), timeoutMs);
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (err) => fail(err.message));
    child.once('exit', (code, signal) => fail(`exited (${signal ?? code}) before it was ready`));
    const port = opts.listening;
    if (port !== undefined) probe();

    function onData(chunk: Buffer): void {
      out += chunk.toString();
      if (out.length > KEEP) out = out.slice(-KEEP);
      if (settled || port !== undefined) return;
      const info = readiness(out, opts.ready);
      if (info !== null) succeed(info);
    }
    // Tried until it answers, the child exits or the timeout fires, whichever comes first.
    function probe(): void {
      if (settled) return;
      const socket = connect(port!, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        succeed({ port });
      });
      socket.once('error', () => setTimeout(probe, PROBE_MS));
    }
  });
}

function readiness(out: string, ready: RegExp | undefined): Record<string, unknown> | null {
  if (ready !== undefined) {
    const m = out.match(ready);
    return m === null ? null : { match: m.slice(1) };
  }
  for (const line of out.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      return JSON.parse(line) as Record<string, unknown>;
    } catch {
      // A partial line: wait for the rest.
    }
  }
  return null;
}

/** Resident memory of a process and all its descendants, in bytes; 0 where /proc is not readable. */
export function treeRss(pid: number): number {
  return sumTree(pid, (p) => {
    const m = readFileSync(`/proc/${p}/status`, 'utf8').match(/^VmRSS:\s+(\d+) kB/m);
    return m === null ? 0 : Number(m[1]) * 1024;
  });
}

let ticksPerSecond = 0;

/**
 * CPU time (user + system) a process and its living descendants have used so far, in
 * seconds; 0 where /proc is not readable. The difference over a run, divided by the
 * requests served, is a cost per request that hardly moves when other work on the
 * machine takes cores away, unlike requests per second.
 */
export function treeCpuSeconds(pid: number): number {
  if (ticksPerSecond === 0) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return sumTree(pid, (p) => {
    const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
    // Fields after the command name, which may itself hold spaces and parentheses.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / ticksPerSecond;
  });
}

function sumTree(pid: number, read: (pid: number) => number): number {
  let total = 0;
  try {
    total += read(pid);
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const children = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (children === '') continue;
      for (const c of children.split(/\s+/)) total += sumTree(Number(c), read);
    }
  } catch {
    // The process is gone, or this is not Linux.
  }
  return total;
}
