// Idle memory of `tandem run`: the control plane and its workers, one pool of two
// backends with health checks, admin API on. For each process: RSS, PSS, private (clean
// + dirty), anonymous memory and file pages (from /proc/PID/smaps_rollup). RSS counts
// the node binary's pages (~50 MB) in every process although they are one copy in
// memory; the total printed is the anonymous memory of all processes plus the file
// pages of the largest once. (PSS would share them out, but also with any other process
// of the same node binary running, this benchmark's own included.)
//
//   node bench/memory.ts               # one worker
//   WORKERS=2 node bench/memory.ts
//   LOAD_SECONDS=10 node bench/memory.ts   # also the worker's RSS under load and after it
//   npm run build && TANDEM_CLI=dist/cli.js node bench/memory.ts   # the JavaScript a package ships
//
// Run from src/, each process also holds Node's type stripper (its WebAssembly and the
// memory it compiles in), which an installed package, running dist/, does not load.

import autocannon from 'autocannon';
import { readFileSync } from 'node:fs';
import { startBackend } from '../test/helpers/backends.ts';
import { singlePool } from '../test/helpers/config.ts';
import { CLI, NODE, startTandem } from '../test/helpers/tandem.ts';

const WORKERS = Number(process.env.WORKERS ?? 1);
const LOAD_SECONDS = Number(process.env.LOAD_SECONDS ?? 0);
const IDLE_MS = Number(process.env.IDLE_MS ?? 4000);
const ENTRY = process.env.TANDEM_CLI ?? CLI;

export interface Rollup { rss: number; pss: number; private: number; shared: number; anon: number; file: number }

/** MB figures of one process from smaps_rollup. */
export function rollup(pid: number): Rollup {
  const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (key: string) => Number(text.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'))?.[1] ?? 0);
  const mb = (n: number) => Math.round(n / 102.4) / 10;
  return {
    rss: mb(kb('Rss')),
    pss: mb(kb('Pss')),
    private: mb(kb('Private_Clean') + kb('Private_Dirty')),
    shared: mb(kb('Shared_Clean') + kb('Shared_Dirty')),
    anon: mb(kb('Anonymous')),
    file: mb(kb('Rss') - kb('Anonymous')),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const backends = await Promise.all(['b1', 'b2'].map((name) => startBackend({ name })));
  const t = await startTandem(singlePool(backends.map((b) => ({ name: b.name, url: b.url })), {
    healthCheck: { path: '/healthz', interval: '1s', timeout: '500ms' },
  }, { workers: Math.max(1, WORKERS) }), { command: [NODE, ENTRY], args: ['--workers', String(WORKERS)] });
  await sleep(IDLE_MS);
  const primary = t.child.pid!;
  // With --workers 0 the data plane is the control plane's own process.
  const workers = t.workerPids().filter((pid) => pid !== primary);
  const idle = { primary: rollup(primary), workers: workers.map(rollup) };
  const all = [idle.primary, ...idle.workers];
  const sum = (k: keyof Rollup) => Math.round(all.reduce((s, r) => s + r[k], 0) * 10) / 10;
  const total = Math.round((sum('anon') + Math.max(...all.map((r) => r.file))) * 10) / 10;
  const out: Record<string, unknown> = { workers: WORKERS, idle, total, anonSum: sum('anon'), pssSum: sum('pss'), rssSum: sum('rss'), privateSum: sum('private') };
  if (LOAD_SECONDS > 0) {
    // The reading with the highest RSS, whole: file pages (more of the node binary's code
    // paged in by the hot path, shared with every node process) apart from anonymous memory.
    const peak: Rollup[] = workers.map(rollup);
    const watch = setInterval(() => workers.forEach((w, i) => {
      const now = rollup(w);
      if (now.rss > peak[i].rss) peak[i] = now;
    }), 200);
    const r = await autocannon({ url: `${t.url}/`, connections: 50, duration: LOAD_SECONDS });
    clearInterval(watch);
    await sleep(IDLE_MS);
    out.load = { rps: Math.round(r.requests.average), peakRss: peak, after: workers.map(rollup) };
  }
  console.log(JSON.stringify(out, null, 2));
  console.log(`total ${total} MB (anonymous ${out.anonSum} + file pages once; RSS sum ${out.rssSum}, PSS sum ${out.pssSum}): `
    + `control plane ${idle.primary.rss}/${idle.primary.anon}/${idle.primary.file}, `
    + idle.workers.map((w, i) => `worker ${i + 1} ${w.rss}/${w.anon}/${w.file}`).join(', ') + ' MB (RSS/anonymous/file)');
  if (out.load !== undefined) {
    const l = out.load as { rps: number; peakRss: Rollup[]; after: Rollup[] };
    const fig = (r: Rollup) => `${r.rss}/${r.anon}/${r.file}`;
    console.log(`under load (${l.rps} req/s): worker peak ${l.peakRss.map(fig).join(', ')} MB against ${idle.workers.map(fig).join(', ')} idle; `
      + `${l.after.map(fig).join(', ')} MB after (RSS/anonymous/file)`);
  }
  await t.stop();
  await Promise.all(backends.map((b) => b.close()));
}

if (import.meta.main) await main();
