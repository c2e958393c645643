// Child processes of the benchmark: every server (backend, proxies, tandem) runs in its
// own process, so none of them shares an event loop with another or with the load
// generator. A service announces itself with one JSON line on stdout, `{"port": N}` or
// `{"ports": [...]}`; tandem itself is recognised by its log lines instead.

import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

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
  env?: Record<string, string>;
}

const KEEP = 64 * 1024;

/** Starts `node args...` with the Node running this process and waits until it says it is ready. */
export function spawnService(args: string[], opts: SpawnOptions = {}): Promise<Service> {
  const child = spawn(process.execPath, args, {
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
      reject(new Error(`${args.join(' ')}: ${why}; output:\n${out}`));
    };
    const timer = setTimeout(() => fail(`not ready within ${timeoutMs} ms`), timeoutMs);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      if (out.length > KEEP) out = out.slice(-KEEP);
      if (settled) return;
      const info = readiness(out, opts.ready);
      if (info !== null) {
        settled = true;
        clearTimeout(timer);
        Object.assign(service.info, info);
        resolve(service);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (err) => fail(err.message));
    child.once('exit', (code, signal) => fail(`exited (${signal ?? code}) before it was ready`));
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
  let total = 0;
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = status.match(/^VmRSS:\s+(\d+) kB/m);
    if (m !== null) total += Number(m[1]) * 1024;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const children = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (children === '') continue;
      for (const c of children.split(/\s+/)) total += treeRss(Number(c));
    }
  } catch {
    // The process is gone, or this is not Linux.
  }
  return total;
}
