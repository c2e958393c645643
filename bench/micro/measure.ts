// A tiny timing loop for the micro-benchmarks: warm up, then time rounds with
// process.hrtime.bigint() and report the median ns/op, plus the heap bytes allocated
// per op (approximate: heap growth over a short run between two forced collections).

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

export interface BenchOptions {
  /** Operations per timed round; `loop` is called with this. */
  readonly ops: number;
  /** Timed rounds; the median is reported. */
  readonly rounds?: number;
  /** Runs before each round, untimed (e.g. to make fresh input strings). */
  readonly prepare?: () => void;
}

/**
 * Times `loop(ops)`, which must do the operation `ops` times; the loop lives in the
 * caller's closure so that V8 optimizes each benchmark's loop on its own.
 */
export function bench(label: string, options: BenchOptions, loop: (ops: number) => void): void {
  const { ops, rounds = 5, prepare } = options;
  for (let r = 0; r < Math.max(3, Math.ceil(rounds / 5)); r++) {
    prepare?.();
    loop(ops);
  }
  const times: number[] = [];
  for (let r = 0; r < rounds; r++) {
    prepare?.();
    const start = process.hrtime.bigint();
    loop(ops);
    times.push(Number(process.hrtime.bigint() - start) / ops);
  }
  times.sort((a, b) => a - b);

  // About 20k ops: few enough that what a leaky version allocates stays in the young
  // generation (no collection hides it), enough that a few stray bytes round to 0.
  const repeats = Math.max(1, Math.round(20_000 / ops));
  const probe = Math.min(ops, 20_000);
  prepare?.();
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let r = 0; r < repeats; r++) loop(probe);
  const bytes = Math.max(0, process.memoryUsage().heapUsed - before) / (probe * repeats);
  gc();

  const ns = times[Math.floor(rounds / 2)];
  console.log(`${label.padEnd(52)} ${ns.toFixed(1).padStart(8)} ns/op   ${bytes.toFixed(1).padStart(6)} B/op`);
}

/** Keeps results alive so the loops are not optimized away. */
export const sink: { value: unknown } = { value: null };
