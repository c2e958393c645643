// `tandem run`: starts the control plane (src/control/), which starts the data planes,
// and turns signals into its reload and graceful stop.

import { readFileSync } from 'node:fs';
import { ControlPlane } from './control/control-plane.ts';
import { log } from './log.ts';

export interface RunOptions {
  file: string;
  node: string | null;
  /** Overrides the config's `workers` (0: the data plane runs in this process); null: as configured. */
  workers: number | null;
}

/** package.json's version; src/ and the packaged dist/ are both one level below it. */
function version(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** Runs until SIGTERM or SIGINT; resolves with the exit code after a graceful stop. */
export async function run(opts: RunOptions): Promise<number> {
  // SIGUSR1 (logrotate's postrotate: the access log file was renamed) makes every data
  // plane open it again. Caught from the start: node's default would open the inspector.
  // Data planes still starting open the file as it is then.
  let reopen = () => {};
  process.on('SIGUSR1', () => reopen());
  const plane = await ControlPlane.start({ file: opts.file, node: opts.node, workers: opts.workers });
  reopen = () => void plane.reopenLogs('SIGUSR1');
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      const started = performance.now();
      const shutdownTimeout = plane.config().shutdownTimeout;
      log.info({ event: 'stop', signal, shutdownTimeout }, `${signal}: stopping (in-flight requests get up to ${shutdownTimeout} ms)`);
      plane.close().then(() => {
        log.info({ event: 'stopped', signal, durationMs: Math.round(performance.now() - started) }, 'stopped');
        resolve(0);
      }, (err: Error) => {
        log.error({ event: 'stopped', signal, err }, `stop failed: ${err.message}`);
        resolve(2);
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    // The reload's outcome is logged from its event (src/control/event-log.ts).
    process.on('SIGHUP', () => {
      plane.reload({ source: 'SIGHUP' }).catch((err: Error) => {
        log.error({ event: 'reload', result: 'failure', source: 'SIGHUP', errors: [err.message] }, `reload failed, running config kept: ${err.message}`);
      });
    });
    // Only now: whoever waits for this line may signal at once, and the default action
    // of SIGHUP would end the process.
    const listeners = plane.listeners();
    const admin = plane.adminAddress();
    // With --workers 0 the one data plane is this process.
    const pids = plane.workerPids();
    const workers = pids.includes(process.pid) ? 0 : pids.length;
    const v = version();
    log.info({
      event: 'start', version: v, nodeVersion: process.version, workers, node: plane.node, config: plane.file,
      listeners: Object.fromEntries(listeners.map((l) => [l.name, l.address])), admin,
    }, `ready: tandem ${v} on Node ${process.version}, ${workers === 0 ? 'no worker processes' : `${workers} worker${workers === 1 ? '' : 's'}`}, `
      + `listeners ${listeners.map((l) => `${l.name} on ${l.address}`).join(', ')}${admin === null ? '' : `, admin on ${admin}`}`);
  });
}
