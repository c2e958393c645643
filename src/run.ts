// `tandem run`: starts the control plane (src/control/), which starts the data planes,
// and turns signals into its reload and graceful stop.

import { ControlPlane } from './control/control-plane.ts';

export interface RunOptions {
  file: string;
  node: string | null;
  /** Overrides the config's `workers` (0: the data plane runs in this process); null: as configured. */
  workers: number | null;
}

/** Lines for operators on stderr; never called per request. */
export function log(msg: string): void {
  process.stderr.write(`${new Date().toISOString()} tandem: ${msg}\n`);
}

/** Runs until SIGTERM or SIGINT; resolves with the exit code after a graceful stop. */
export async function run(opts: RunOptions): Promise<number> {
  // SIGUSR1 (logrotate's postrotate: the access log file was renamed) makes every data
  // plane open it again. Caught from the start: node's default would open the inspector.
  // Data planes still starting open the file as it is then.
  let reopen = () => {};
  process.on('SIGUSR1', () => reopen());
  const plane = await ControlPlane.start({ file: opts.file, node: opts.node, workers: opts.workers, log });
  reopen = () => void plane.reopenLogs('SIGUSR1');
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log(`${signal}: stopping (in-flight requests get up to ${plane.config().shutdownTimeout} ms)`);
      plane.close().then(() => resolve(0), (err: Error) => {
        log(`stop failed: ${err.message}`);
        resolve(2);
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      plane.reload().then((r) => {
        if (r.ok) log('reloaded');
        else log(`reload rejected, running config kept:\n${r.errors.join('\n')}`);
      }, (err: Error) => log(`reload failed, running config kept: ${err.message}`));
    });
    // Only now: whoever waits for `ready` may signal at once, and the default action of
    // SIGHUP would end the process.
    log('ready');
  });
}
