// Loaded into tandem's processes by the benchmarks that read memory (`node --expose-gc
// --import bench/heap-probe.ts src/cli.ts run ...`; workers inherit both flags): on
// SIGUSR2 a process collects its garbage twice and writes its heap figures to
// $TANDEM_HEAP_PROBE_DIR/heap-PID.json, so that a benchmark can tell garbage not yet
// collected from memory still referenced (a heap that keeps growing after GC) and from
// memory the allocator keeps (RSS above a heap that went back down). With
// TANDEM_HEAP_SNAPSHOTS=1 it also writes a heap snapshot beside it each time, to diff.
// Never part of the product.

import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { getHeapStatistics, writeHeapSnapshot } from 'node:v8';

export interface HeapFigures {
  /** MB, after two full collections. */
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** MB the process's anonymous mappings hold (V8's heap, malloc's arenas, stacks). */
  anon: number;
  rss: number;
  /** MB V8 has malloc()ed now (zones, compiler) and at most since the start. */
  malloced: number;
  peakMalloced: number;
}

const dir = process.env.TANDEM_HEAP_PROBE_DIR;
const gc = (globalThis as { gc?: () => void }).gc;
const mb = (n: number) => Math.round(n / 104857.6) / 10;

if (dir !== undefined && gc !== undefined) {
  process.on('SIGUSR2', () => {
    gc();
    gc();
    const m = process.memoryUsage();
    const h = getHeapStatistics();
    const rollup = readFileSync('/proc/self/smaps_rollup', 'utf8');
    const kb = (key: string) => Number(rollup.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'))?.[1] ?? 0);
    const figures: HeapFigures = {
      heapUsed: mb(m.heapUsed), heapTotal: mb(m.heapTotal), external: mb(m.external), arrayBuffers: mb(m.arrayBuffers),
      anon: Math.round(kb('Anonymous') / 102.4) / 10, rss: Math.round(kb('Rss') / 102.4) / 10,
      malloced: mb(h.malloced_memory), peakMalloced: mb(h.peak_malloced_memory),
    };
    if (process.env.TANDEM_HEAP_SNAPSHOTS === '1') writeHeapSnapshot(`${dir}/heap-${process.pid}-${Date.now()}.heapsnapshot`);
    // Written whole, then renamed: the reader never sees half a file.
    writeFileSync(`${dir}/heap-${process.pid}.tmp`, JSON.stringify(figures));
    renameSync(`${dir}/heap-${process.pid}.tmp`, `${dir}/heap-${process.pid}.json`);
  });
}

/** Asks process `pid` (started with this probe) for its figures; null if it does not answer in time. */
export async function readHeap(pid: number, probeDir: string): Promise<HeapFigures | null> {
  const file = `${probeDir}/heap-${pid}.json`;
  const { rmSync } = await import('node:fs');
  rmSync(file, { force: true });
  process.kill(pid, 'SIGUSR2');
  // A heap snapshot takes a while to write.
  const tries = process.env.TANDEM_HEAP_SNAPSHOTS === '1' ? 1200 : 100;
  for (let i = 0; i < tries; i++) {
    await new Promise((r) => setTimeout(r, 50));
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as HeapFigures;
    } catch {
      // Not written yet.
    }
  }
  return null;
}
