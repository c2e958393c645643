// Real tandem processes for tests: writes a config into a temp dir, starts
// `node src/cli.ts run` on it, and reads the bound addresses from its log lines, so
// every listener and the admin API can use port 0.
//
//   const t = await startTandem(yamlText);
//   await fetch(`${t.url}/`);          // the first listener
//   await t.reload(newYamlText);       // rewrites the file and sends SIGHUP
//   await t.stop();                    // SIGTERM, waits for exit
//   t.workerPids();                    // pids of the live worker processes (the data plane)

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');
/** The Node the project pins; tests start tandem with it whatever `node` is on PATH. */
export const NODE = process.execPath;
export const CLI = join(ROOT, 'src/cli.ts');

export interface TandemProcess {
  readonly child: ChildProcess;
  readonly dir: string;
  readonly file: string;
  /** Listener name -> host:port. */
  readonly listeners: Map<string, string>;
  /** `http://host:port` of the first listener. */
  readonly url: string;
  /** `http://host:port` of the admin API, or null. */
  readonly admin: string | null;
  /** Everything written to stderr and stdout so far. */
  output(): string;
  /** Pids of the live worker processes, oldest first, as the primary logged them. */
  workerPids(): number[];
  /** Resolves with the first match of `re` in the output after offset `from` (default: from now on). */
  waitForLog(re: RegExp, opts?: { from?: number; timeoutMs?: number }): Promise<RegExpMatchArray>;
  /** Rewrites the config file and sends SIGHUP; resolves when the reload was logged. */
  reload(yaml: string): Promise<string>;
  /** SIGTERM (or `signal`) and wait for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

export interface StartOptions {
  args?: string[];
  /** What starts tandem, `run -c FILE` and `args` following it (default: NODE on src/cli.ts). */
  command?: readonly string[];
  env?: Record<string, string>;
  /** Run inside this network namespace (`ip netns exec`). */
  netns?: string;
  timeoutMs?: number;
}

/** Starts tandem on `yaml` and waits until every listener and the admin API are bound. */
export async function startTandem(yaml: string, opts: StartOptions = {}): Promise<TandemProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-test-'));
  const file = join(dir, 'tandem.yaml');
  writeFileSync(file, yaml);
  const [cmd, ...pre] = opts.command ?? [NODE, CLI];
  const args = [...pre, 'run', '-c', file, ...(opts.args ?? [])];
  const child = opts.netns === undefined
    ? spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn('ip', ['netns', 'exec', opts.netns, cmd, ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters: { re: RegExp; from: number; resolve: (m: RegExpMatchArray) => void }[] = [];
  const onData = (chunk: Buffer) => {
    out += chunk.toString();
    for (const w of [...waiters]) {
      const m = out.slice(w.from).match(w.re);
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  const waitFor = (re: RegExp, from: number, ms: number) => new Promise<RegExpMatchArray>((res, rej) => {
    const m = out.slice(from).match(re);
    if (m) return res(m);
    const timer = setTimeout(() => rej(new Error(`tandem did not log ${re} within ${ms} ms; output:\n${out}`)), ms);
    const w = { re, from, resolve: (mm: RegExpMatchArray) => { clearTimeout(timer); res(mm); } };
    waiters.push(w);
    void exited.then((code) => {
      if (waiters.includes(w)) {
        clearTimeout(timer);
        rej(new Error(`tandem exited with ${code} before logging ${re}; output:\n${out}`));
      }
    });
  });
  // A deadline, not a figure: starting Node processes on a busy machine takes seconds.
  const timeout = opts.timeoutMs ?? 60_000;
  try {
    await waitFor(/tandem: ready\b/, 0, timeout);
  } catch (err) {
    // Nobody gets a handle on an instance that did not come up in time: end it here, or
    // it (and its workers) would keep the test file from ever finishing.
    child.kill('SIGKILL');
    throw err;
  }
  const listeners = new Map<string, string>();
  for (const m of out.matchAll(/listener (\S+) on (\S+)/g)) listeners.set(m[1], m[2]);
  const adminMatch = out.match(/admin on (http:\/\/\S+)/);
  const first = [...listeners.values()][0];
  return {
    child,
    dir,
    file,
    listeners,
    url: `http://${first}`,
    admin: adminMatch ? adminMatch[1] : null,
    output: () => out,
    workerPids: () => workerPids(out),
    waitForLog: (re: RegExp, o: { from?: number; timeoutMs?: number } = {}) => waitFor(re, o.from ?? out.length, o.timeoutMs ?? timeout),
    exited,
    async reload(text: string) {
      writeFileSync(file, text);
      const from = out.length;
      child.kill('SIGHUP');
      const m = await waitFor(/(reloaded|reload rejected[^\n]*(\n[^\n]*:\d+:\d+:[^\n]*)*)/, from, timeout);
      return m[0];
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      return exited;
    },
  };
}

/**
 * Workers the primary logged as started (`worker N pid P`) and not yet as exited or
 * stopping; with `--workers 0`, the primary itself (`data plane in this process, pid P`).
 */
function workerPids(out: string): number[] {
  const gone = new Set<string>();
  for (const m of out.matchAll(/tandem: worker (\d+) pid \d+ (exited|stopping)/g)) gone.add(m[1]);
  const pids: number[] = [];
  for (const m of out.matchAll(/tandem: worker (\d+) pid (\d+)$/gm)) if (!gone.has(m[1])) pids.push(Number(m[2]));
  for (const m of out.matchAll(/tandem: data plane in this process, pid (\d+)$/gm)) pids.push(Number(m[1]));
  return pids;
}
