// The bounded soak: tandem under steady load while the world misbehaves, against the
// same load on a quiet world. For SOAK_SECONDS (default 60) each phase:
//   - autocannon drives GETs (idempotent) from well-behaved clients;
//   - in the hostile phase, one of three backends is killed and restarted every 5 s,
//     the config reloaded (SIGHUP) every 3 s, 200 slowloris connections trickle header
//     bytes, and one client pipelines thousands of requests and never reads.
// It prints failed requests of the well-behaved clients, their p99 latency in both
// phases and its ratio, and the worker's file descriptors and memory before and after
// each hostile round (after its attackers are gone and a settle period). To tell a leak
// from memory the allocator keeps, the hostile phase runs SOAK_ROUNDS times (default 2)
// and each reading also has the worker's heap after two forced collections
// (bench/heap-probe.ts): a leak grows the collected heap round after round; retention
// leaves the heap where it was and RSS level after the first round. Last, RSS is read
// for SOAK_IDLE_SECONDS (default 30) with no load and no forced collection.
//
//   npm run bench:soak                # SOAK_SECONDS=60
//   SOAK_SECONDS=10 SOAK_ROUNDS=3 npm run bench:soak

import autocannon from 'autocannon';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBackend, type TestBackend } from '../test/helpers/backends.ts';
import { singlePool } from '../test/helpers/config.ts';
import { CLI, NODE, startTandem, type TandemProcess } from '../test/helpers/tandem.ts';
import { readHeap, type HeapFigures } from './heap-probe.ts';

const SECONDS = Number(process.env.SOAK_SECONDS ?? 60);
const ROUNDS = Number(process.env.SOAK_ROUNDS ?? 2);
const IDLE_SECONDS = Number(process.env.SOAK_IDLE_SECONDS ?? 30);
const PROBE = join(import.meta.dirname, 'heap-probe.ts');
const CONNECTIONS = 50;

function fds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function rssMb(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+) kB/);
  return Number(m![1]) / 1024;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function yaml(backends: TestBackend[], serial: number): string {
  return singlePool(backends.map((b) => ({ name: b.name, url: b.url })), {
    healthCheck: { path: '/healthz', interval: '500ms', timeout: '400ms', rise: 1, fall: 2 },
    retries: 2,
    // Changes with every reload, so each one really builds a new generation.
    timeouts: { response: `${10 + (serial % 5)}s` },
  }, {
    listeners: [{ name: 'web', address: '127.0.0.1:0', timeouts: { headers: '10s', send: '5s' } }],
    admin: { address: '127.0.0.1:0' },
  });
}

interface Phase { failed: number; non2xx: number; requests: number; p99: number; p50: number; rps: number; codes: Record<string, number> }

async function load(url: string): Promise<Phase> {
  const r = await autocannon({ url: `${url}/soak`, connections: CONNECTIONS, duration: SECONDS, timeout: 10 });
  // The answers that were not 2xx, by status code, as the well-behaved clients saw them.
  const codes: Record<string, number> = {};
  for (const [code, stat] of Object.entries(r.statusCodeStats ?? {})) if (!code.startsWith('2')) codes[code] = (stat as { count: number }).count;
  return { failed: r.errors + r.timeouts, non2xx: r.non2xx, requests: r.requests.total, p99: r.latency.p99, p50: r.latency.p50, rps: r.requests.average, codes };
}

/** tandem's own error answers by pool and catalogue code (every client: the attackers' too). */
async function proxyErrors(admin: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${admin}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^tandem_proxy_errors_total\{pool="([^"]*)",code="([^"]*)"\} (\d+)$/gm)) if (m[3] !== '0') out[`${m[1] || '-'} ${m[2]}`] = Number(m[3]);
  return out;
}

/** 200 connections that send a header byte every few seconds, reopened when cut. */
function slowloris(address: string, stop: { done: boolean }): Socket[] {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const sockets: Socket[] = [];
  const open = (i: number) => {
    if (stop.done) return;
    const s = connect(port, host);
    sockets[i] = s;
    s.on('error', () => {});
    s.on('close', () => setTimeout(() => open(i), 200));
    s.write('GET /slow HTTP/1.1\r\nHost: a\r\n');
    const tick = setInterval(() => (s.destroyed || stop.done ? clearInterval(tick) : s.write('X-a: b\r\n')), 3000);
  };
  for (let i = 0; i < 200; i++) open(i);
  return sockets;
}

/** One client that pipelines requests without end and never reads; its sockets, for closing. */
function pipeliner(address: string, stop: { done: boolean }): Socket[] {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  const sockets: Socket[] = [];
  const go = () => {
    if (stop.done) return;
    const s = connect(port, host);
    sockets.push(s);
    s.pause();
    s.on('error', () => {});
    s.on('close', () => setTimeout(go, 200));
    const burst = 'GET /pipelined HTTP/1.1\r\nHost: a\r\n\r\n'.repeat(2000);
    const write = () => {
      if (stop.done || s.destroyed) return;
      if (s.write(burst)) setTimeout(write, 100);
      else s.once('drain', write);
    };
    write();
  };
  go();
  return sockets;
}

interface Reading { fds: number; rss: number; gc: HeapFigures | null }

/** File descriptors and RSS as they are, then the heap after forced collections. */
async function reading(pid: number, probeDir: string): Promise<Reading> {
  const now = { fds: fds(pid), rss: Math.round(rssMb(pid) * 10) / 10 };
  return { ...now, gc: await readHeap(pid, probeDir) };
}

function show(label: string, r: Reading): string {
  const g = r.gc === null ? 'no heap figures' : `after GC: heap ${r.gc.heapUsed} MB used of ${r.gc.heapTotal}, external ${r.gc.external}, anon ${r.gc.anon}, RSS ${r.gc.rss}`;
  return `${label.padEnd(16)} fds ${r.fds}, RSS ${r.rss.toFixed(1)} MB; ${g}`;
}

/** One hostile phase: attackers, backend kills and reloads beside the well-behaved load. */
async function hostilePhase(t: TandemProcess, backends: TestBackend[], serial: { n: number }): Promise<{ phase: Phase; reloads: number }> {
  const address = [...t.listeners.values()][0];
  const stop = { done: false };
  const attackers = slowloris(address, stop);
  const pipelining = pipeliner(address, stop);
  const victim = backends[0];
  const kills = setInterval(() => {
    void victim.stop().then(() => sleep(1500)).then(() => victim.restart());
  }, 5000);
  let reloads = 0;
  const reloader = setInterval(() => {
    serial.n++;
    void t.reload(yaml(backends, serial.n)).then(() => reloads++, () => {});
  }, 3000);
  const phase = await load(t.url);
  stop.done = true;
  clearInterval(kills);
  clearInterval(reloader);
  // The attackers leave: what they leave behind is tandem's.
  for (const s of [...attackers, ...pipelining]) s?.destroy();
  await victim.restart();
  return { phase, reloads };
}

async function main(): Promise<void> {
  const backends = await Promise.all([1, 2, 3].map((i) => startBackend({ name: `s${i}` })));
  const serial = { n: 0 };
  const probeDir = mkdtempSync(join(tmpdir(), 'tandem-soak-'));
  const t: TandemProcess = await startTandem(yaml(backends, serial.n), {
    command: [NODE, '--expose-gc', '--import', PROBE, CLI],
    env: { TANDEM_HEAP_PROBE_DIR: probeDir },
  });
  const [worker] = t.workerPids();
  console.log(`heap figures in ${probeDir}`);
  console.log(`soak: ${SECONDS} s per phase, ${ROUNDS} hostile rounds, ${CONNECTIONS} connections, worker pid ${worker}`);

  const quiet = await load(t.url);
  await sleep(2000);
  const before = await reading(worker, probeDir);
  console.log(show('after quiet', before));
  const rounds: { phase: Phase; reloads: number; after: Reading }[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const { phase, reloads } = await hostilePhase(t, backends, serial);
    // Let closed connections and garbage settle before the reading.
    await sleep(5000);
    const after = await reading(worker, probeDir);
    rounds.push({ phase, reloads, after });
    console.log(show(`after hostile ${i + 1}`, after), `(${phase.requests} requests, ${reloads} reloads)`);
  }
  // No load and no forced collection: what RSS does on its own.
  const idle: number[] = [];
  for (let s = 0; s < IDLE_SECONDS; s += 10) {
    await sleep(Math.min(10, IDLE_SECONDS - s) * 1000);
    idle.push(Math.round(rssMb(worker) * 10) / 10);
  }
  if (idle.length > 0) console.log(`idle RSS every 10 s after the last round: ${idle.join(', ')} MB`);

  const { phase: hostile, reloads } = rounds[0];
  const after = rounds[rounds.length - 1].after;
  const ratio = hostile.p99 / Math.max(1, quiet.p99);
  console.log(JSON.stringify({ seconds: SECONDS, quiet, hostile: rounds.map((r) => r.phase), reloads, p99Ratio: Number(ratio.toFixed(2)), worker: { before, rounds: rounds.map((r) => r.after), idle } }, null, 2));
  const heaps = rounds.map((r) => r.after.gc?.heapUsed ?? NaN);
  console.log(`worker heap after forced GC: ${before.gc?.heapUsed} MB after the quiet phase, ${heaps.join(' -> ')} MB after each hostile round`);
  // From the first round on (the first one also warms up: code, pools, caches).
  const perRound = rounds.length > 1 ? (heaps[heaps.length - 1] - heaps[0]) / (heaps.length - 1) : NaN;
  if (Number.isFinite(perRound)) {
    console.log(perRound > 1
      ? `heap after GC grows ${perRound.toFixed(1)} MB per round: referenced memory accumulates (TANDEM_HEAP_SNAPSHOTS=1 writes snapshots to diff)`
      : `heap after GC level (${perRound.toFixed(1)} MB per round): RSS above it is memory the allocator keeps, not referenced memory`);
  }
  console.log(`well-behaved clients: ${hostile.requests} requests, ${hostile.failed} failed, ${hostile.non2xx} non-2xx (quiet run: ${quiet.failed} failed, ${quiet.non2xx} non-2xx)`);
  console.log(`non-2xx by status (well-behaved clients): ${JSON.stringify(hostile.codes)}; tandem's own error answers (all clients): ${JSON.stringify(await proxyErrors(t.admin!))}`);
  console.log(`p99 ${hostile.p99} ms with attackers, ${quiet.p99} ms without: ${ratio.toFixed(2)}x`);
  console.log(`worker fds ${before.fds} -> ${after.fds}, RSS ${before.rss.toFixed(1)} -> ${after.rss.toFixed(1)} MB`);
  await t.stop();
  await Promise.all(backends.map((b) => b.close()));
}

await main();
