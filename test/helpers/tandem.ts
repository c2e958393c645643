// Real tandem processes for tests: writes a config into a temp dir, starts
// `node src/cli.ts run` on it, and reads the bound addresses from its `start` log line
// (JSON lines on stderr, src/log.ts), so every listener and the admin API can use port 0.
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
import { parseLogLines, type LogLine } from './log.ts';

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
  /** The log lines (JSON on stderr) so far, parsed, in order. */
  lines(): LogLine[];
  /**
   * Resolves with the first log line for which `match` is true, looking from index `from`
   * of lines() (default: from now on).
   */
  waitForLine(match: (line: LogLine) => boolean, opts?: { from?: number; timeoutMs?: number }): Promise<LogLine>;
  /** Pids of the live worker processes, oldest first, as the primary logged them. */
  workerPids(): number[];
  /** Resolves with the first match of `re` in the output after offset `from` (default: from now on). */
  waitForLog(re: RegExp, opts?: { from?: number; timeoutMs?: number }): Promise<RegExpMatchArray>;
  /**
   * Rewrites the config file and sends SIGHUP; resolves when the reload was logged, with
   * `reloaded`, or `reload rejected, running config kept:` and the FILE:LINE:COL lines.
   */
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
  const lineWaiters: { match: (l: LogLine) => boolean; from: number; resolve: (l: LogLine) => void }[] = [];
  // stderr apart, whole lines only: a chunk of stdout (the access log) can fall between
  // two chunks of one stderr line in `out`.
  const logLines: LogLine[] = [];
  let partial = '';
  const findLine = (match: (l: LogLine) => boolean, from: number) => logLines.slice(from).find(match);
  const onData = (chunk: Buffer, stderr: boolean) => {
    out += chunk.toString();
    if (stderr) {
      partial += chunk.toString();
      const end = partial.lastIndexOf('\n') + 1;
      logLines.push(...parseLogLines(partial.slice(0, end)));
      partial = partial.slice(end);
    }
    for (const w of [...waiters]) {
      const m = out.slice(w.from).match(w.re);
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
    for (const w of [...lineWaiters]) {
      const l = findLine(w.match, w.from);
      if (l !== undefined) {
        lineWaiters.splice(lineWaiters.indexOf(w), 1);
        w.resolve(l);
      }
    }
  };
  child.stdout!.on('data', (c: Buffer) => onData(c, false));
  child.stderr!.on('data', (c: Buffer) => onData(c, true));
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
  const waitForLine = (match: (l: LogLine) => boolean, from: number, ms: number) => new Promise<LogLine>((res, rej) => {
    const l = findLine(match, from);
    if (l !== undefined) return res(l);
    const timer = setTimeout(() => rej(new Error(`tandem did not log the line asked for within ${ms} ms; output:\n${out}`)), ms);
    const w = { match, from, resolve: (ll: LogLine) => { clearTimeout(timer); res(ll); } };
    lineWaiters.push(w);
    void exited.then((code) => {
      if (lineWaiters.includes(w)) {
        clearTimeout(timer);
        rej(new Error(`tandem exited with ${code} before logging the line asked for; output:\n${out}`));
      }
    });
  });
  // A deadline, not a figure: starting Node processes on a busy machine takes seconds.
  const timeout = opts.timeoutMs ?? 60_000;
  let start: LogLine;
  try {
    start = await waitForLine((l) => l.event === 'start', 0, timeout);
  } catch (err) {
    // Nobody gets a handle on an instance that did not come up in time: end it here, or
    // it (and its workers) would keep the test file from ever finishing.
    child.kill('SIGKILL');
    throw err;
  }
  const listeners = new Map(Object.entries(start.listeners as Record<string, string>));
  const admin = start.admin as string | null;
  const first = [...listeners.values()][0];
  return {
    child,
    dir,
    file,
    listeners,
    url: `http://${first}`,
    admin: admin === null ? null : `http://${admin}`,
    output: () => out,
    lines: () => [...logLines],
    workerPids: () => workerPids(logLines),
    waitForLog: (re: RegExp, o: { from?: number; timeoutMs?: number } = {}) => waitFor(re, o.from ?? out.length, o.timeoutMs ?? timeout),
    waitForLine: (match: (l: LogLine) => boolean, o: { from?: number; timeoutMs?: number } = {}) => waitForLine(match, o.from ?? logLines.length, o.timeoutMs ?? timeout),
    exited,
    async reload(text: string) {
      writeFileSync(file, text);
      const from = logLines.length;
      child.kill('SIGHUP');
      return reloadOutcome(await waitForLine((l) => l.event === 'reload', from, timeout));
    },
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      return exited;
    },
  };
}

/** `reloaded`, or `reload rejected, running config kept:` and one error per line, from a `reload` line. */
export function reloadOutcome(line: LogLine): string {
  if (line.result === 'success') return 'reloaded';
  return ['reload rejected, running config kept:', ...(line.errors as string[])].join('\n');
}

/**
 * Data planes the primary logged as started (`worker-start`: a worker process, or with
 * `--workers 0` the primary itself) and not yet as exited or stopping.
 */
export function workerPids(lines: readonly LogLine[]): number[] {
  const gone = new Set<unknown>();
  for (const l of lines) if (l.event === 'worker-exit' || l.event === 'worker-stop') gone.add(l.workerId);
  return lines.filter((l) => l.event === 'worker-start' && !gone.has(l.workerId)).map((l) => l.workerPid as number);
}
