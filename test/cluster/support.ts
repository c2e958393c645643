// Helpers for the cluster tests: a backend that tells which upstream connection each
// request came on, and a way to find which worker process owns that connection (from
// /proc), so a test can say which worker served a request without tandem saying so;
// and a tandem in a process group of its own, for signals sent to the whole group.

import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { CLI, NODE } from '../helpers/tandem.ts';
import { parseLogLines } from '../helpers/log.ts';

/** A backend answering its name, with `x-peer-port`: the port tandem's connection came from. */
export class PeerBackend {
  readonly name: string;
  readonly server: Server;
  readonly port: number;
  readonly url: string;
  /** Requests other than health checks. */
  requests = 0;
  healthChecks = 0;
  healthStatus = 200;
  /** Delay of ordinary answers, in ms. */
  delay = 0;

  constructor(name: string, server: Server) {
    this.name = name;
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    this.url = `http://127.0.0.1:${this.port}`;
    server.on('request', (req, res) => {
      req.resume();
      if (req.url === '/healthz') {
        this.healthChecks++;
        res.writeHead(this.healthStatus, { 'content-length': '2' });
        res.end('ok');
        return;
      }
      this.requests++;
      const answer = () => {
        res.writeHead(200, { 'content-length': Buffer.byteLength(this.name), 'x-backend': this.name, 'x-peer-port': String(req.socket.remotePort) });
        res.end(this.name);
      };
      if (this.delay > 0) setTimeout(answer, this.delay);
      else answer();
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Starts a PeerBackend on 127.0.0.1, port 0. */
export async function startPeerBackend(name: string): Promise<PeerBackend> {
  const server = createServer();
  server.keepAliveTimeout = 10_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return new PeerBackend(name, server);
}

/** What one request through tandem returned. */
export interface Answer { status: number; backend: string; peerPort: number }

/** One GET on a connection of its own, so that node:cluster hands each request to the next worker. */
export async function getFresh(url: string): Promise<Answer> {
  const res = await request(url, { reset: true, headers: { connection: 'close' } });
  const backend = await res.body.text();
  return { status: res.statusCode, backend, peerPort: Number(res.headers['x-peer-port'] ?? 0) };
}

/**
 * getFresh, once more when the connection was reset: what a client does for a request
 * that was in flight (or waiting in a stopped worker's accept queue). A refused
 * connection is not retried.
 */
export async function getRetrying(url: string): Promise<Answer> {
  try {
    return await getFresh(url);
  } catch (err) {
    if ((err as { code?: string }).code === 'ECONNREFUSED') throw err;
    return getFresh(url);
  }
}

/** `count` requests one after another, each on its own connection. */
export async function getMany(url: string, count: number): Promise<Answer[]> {
  const out: Answer[] = [];
  for (let i = 0; i < count; i++) out.push(await getFresh(url));
  return out;
}

/** Inodes of the sockets process `pid` has open. */
function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = readlinkSync(`/proc/${pid}/fd/${fd}`).match(/^socket:\[(\d+)\]$/);
      if (m !== null) inodes.add(m[1]);
    } catch {
      // The fd closed while we looked.
    }
  }
  return inodes;
}

/**
 * Which of `pids` owns the TCP connection from local port `localPort` to remote port
 * `remotePort` (on any address); undefined when none does.
 */
export function ownerOf(pids: readonly number[], localPort: number, remotePort: number): number | undefined {
  let inode: string | undefined;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      const local = parseInt(cols[1].split(':')[1], 16);
      const remote = parseInt(cols[2].split(':')[1], 16);
      if (local === localPort && remote === remotePort) inode = cols[9];
    }
  }
  if (inode === undefined) return undefined;
  return pids.find((pid) => socketInodes(pid).has(inode));
}

/** The worker pid that sent each answer (by its upstream connection to `backend`). */
export function servedBy(pids: readonly number[], answers: readonly Answer[], backends: readonly PeerBackend[]): (number | undefined)[] {
  const portOf = new Map(backends.map((b) => [b.name, b.port]));
  return answers.map((a) => ownerOf(pids, a.peerPort, portOf.get(a.backend) ?? -1));
}

/** Polls `check` every 50 ms until it returns true or `ms` pass. */
export async function until(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Sum of every tandem_requests_total series in a scrape. */
export function requestsTotal(metrics: string): number {
  let sum = 0;
  for (const m of metrics.matchAll(/^tandem_requests_total\{[^}]*\} (\d+)$/gm)) sum += Number(m[1]);
  return sum;
}

/** How many TCP connections to remote port `remotePort` process `pid` has open. */
export function connectionsTo(pid: number, remotePort: number): number {
  const mine = socketInodes(pid);
  let n = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // State 01: established.
      if (cols.length >= 10 && cols[3] === '01' && parseInt(cols[2].split(':')[1], 16) === remotePort && mine.has(cols[9])) n++;
    }
  }
  return n;
}

/** A tandem that leads its own process group, as a service manager or a shell starts it. */
export interface GroupedTandem {
  readonly child: ChildProcess;
  /** Its process group id (the primary's pid). */
  readonly pgid: number;
  readonly dir: string;
  /** `http://host:port` of the first listener. */
  readonly url: string;
  output(): string;
  /** Every worker pid the primary logged, live or gone. */
  everyWorkerPid(): number[];
  /** Resolves with the first match of `re` in the output from offset `from`. */
  waitForLog(re: RegExp, from?: number, ms?: number): Promise<RegExpMatchArray>;
  /** Sends `signal` to every process of the group, as `systemctl stop` or Ctrl-C do. */
  signalGroup(signal: NodeJS.Signals): void;
  exited: Promise<number | null>;
}

/**
 * Starts `tandem run` (with `args`) on `yaml` in a fresh process group, after `setup`
 * has written whatever else it needs into the config's directory; resolves once ready.
 */
export async function startGrouped(yaml: string, opts: { args?: string[]; setup?: (dir: string) => void } = {}): Promise<GroupedTandem> {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-group-'));
  opts.setup?.(dir);
  const file = join(dir, 'tandem.yaml');
  writeFileSync(file, yaml);
  const child = spawn(NODE, [CLI, 'run', '-c', file, ...(opts.args ?? [])], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  let gone = false;
  void exited.then(() => (gone = true));
  const waitForLog = async (re: RegExp, from = 0, ms = 15_000) => {
    await until(() => gone || re.test(out.slice(from)), ms, `tandem to log ${re}; output:\n${out}`);
    const m = out.slice(from).match(re);
    if (m === null) throw new Error(`tandem exited before logging ${re}; output:\n${out}`);
    return m;
  };
  await waitForLog(/"event":"start"/);
  const start = parseLogLines(out).find((l) => l.event === 'start')!;
  const listener = Object.values(start.listeners as Record<string, string>)[0];
  return {
    child,
    pgid: child.pid!,
    dir,
    url: `http://${listener}`,
    output: () => out,
    everyWorkerPid: () => parseLogLines(out).filter((l) => l.event === 'worker-start').map((l) => l.workerPid as number),
    waitForLog,
    signalGroup: (signal) => process.kill(-child.pid!, signal),
    exited,
  };
}

/** Pids of the live (not zombie) processes in process group `pgid`. */
export function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // Fields after the command (which may hold spaces): state, ppid, pgrp, ...
    const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(pgrp) === pgid && state !== 'Z') out.push(Number(entry));
  }
  return out;
}
