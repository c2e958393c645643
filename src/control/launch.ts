// How the control plane starts a data plane: a worker process forked with node:cluster,
// or, with `--workers 0`, a data plane in this very process behind an in-memory channel.
// The control plane and the data plane are the same classes either way.

import type { DataPlaneEnd } from '../channel/ends.ts';
import { forkDataPlane } from '../channel/ipc.ts';
import { inMemoryChannel } from '../channel/in-memory.ts';
import type { Logger } from '../log.ts';

export interface Launcher {
  /** The data plane runs in the control plane's process. */
  readonly inProcess: boolean;
  launch(): DataPlaneEnd;
}

/**
 * Node flags for worker processes, added before the control plane's own (which workers
 * inherit, as they inherit NODE_OPTIONS). A young generation of at most 4 MB per
 * semi-space: V8's default for this heap size lets it grow to 64 MB, and a worker kept
 * that as RSS under load (about 55 MB more for the control plane and one worker under
 * 8,500 req/s, and 10,000 idle connections read 144-181 MB against 116-123). Measured
 * side by side in one benchmark run, the CPU per request stayed within the run's noise
 * (1.05x and 0.89x the default's, small and 16 KiB answers); a semi-space of 1 MB cost 12-35% more. The GC
 * pacer in src/dataplane/gc-pacer.ts still bounds streaming buffers. 8 MB was tried
 * once the fast engine stopped keeping finished exchanges alive: 0.96x the CPU per small
 * request of 4 MB's, but 16 KiB answers in `npm run bench` (wrk, 2 rounds each) went from
 * 30 to 38 us per request. An operator's own `--max-semi-space-size` (in NODE_OPTIONS or
 * on the command line) wins.
 */
export const WORKER_FLAGS: readonly string[] = ['--max-semi-space-size=4'];

/** WORKER_FLAGS, less those the operator set for this process already. */
function workerFlags(): string[] {
  const own = `${process.env.NODE_OPTIONS ?? ''} ${process.execArgv.join(' ')}`;
  return WORKER_FLAGS.filter((flag) => !own.includes(flag.slice(0, flag.indexOf('='))));
}

/**
 * Environment added for worker processes. Fewer glibc malloc arenas keep a streaming
 * worker's RSS down (buffers freed by V8's helper threads otherwise spread over many
 * arenas); an operator's own setting wins.
 */
function workerEnv(): Record<string, string> {
  return { MALLOC_ARENA_MAX: process.env.MALLOC_ARENA_MAX ?? '2' };
}

/** The launcher for `inProcess` data planes or worker processes. */
export async function launcher(inProcess: boolean, log: Logger): Promise<Launcher> {
  if (!inProcess) {
    const execArgv = [...workerFlags(), ...process.execArgv];
    const env = workerEnv();
    return { inProcess, launch: () => forkDataPlane(execArgv, env) };
  }
  // The data plane's code is loaded only where it runs.
  const [{ DataPlaneAgent }, { enableGcPacing }] = await Promise.all([
    import('../dataplane/agent.ts'),
    import('../dataplane/gc-pacer.ts'),
  ]);
  enableGcPacing();
  let next = 1;
  return {
    inProcess,
    launch() {
      const { control, data } = inMemoryChannel(next++);
      new DataPlaneAgent(data, log).hello();
      return control;
    },
  };
}
