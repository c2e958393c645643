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
 * Node flags for worker processes, added to the control plane's own (which workers
 * inherit, as they inherit NODE_OPTIONS). None: `--max-semi-space-size=1` bounded a
 * streaming worker's RSS but cost 12-35% more CPU per small request; the GC pacer in
 * src/dataplane/gc-pacer.ts bounds it (126-133 MB for 1 GiB each way) without that cost.
 */
export const WORKER_FLAGS: readonly string[] = [];

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
    const execArgv = [...process.execArgv, ...WORKER_FLAGS];
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
