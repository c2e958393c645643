import type { Config, VipConfig } from './config/types.ts';
import { Instance } from './main.ts';
import { createMetrics } from './admin/metrics.ts';
import { startAdmin } from './admin/server.ts';

export interface RunOptions {
  file: string;
  node: string | null;
  /** Overrides the config's `workers`; null: as configured. */
  workers: number | null;
}

/** Lines for operators on stderr; never called per request. */
export function log(msg: string): void {
  process.stderr.write(`${new Date().toISOString()} tandem: ${msg}\n`);
}

/**
 * `tandem run`: one instance with its admin API and HA, until SIGTERM or SIGINT.
 * Resolves with the exit code after a graceful stop.
 */
export async function run(opts: RunOptions): Promise<number> {
  const metrics = createMetrics();
  const instance = await Instance.start({ file: opts.file, node: opts.node, metrics, log });
  metrics.observe(instance);
  const config: Config = instance.config();
  const admin = config.admin === null ? null : await startAdmin(instance, metrics, config.admin);
  for (const l of instance.listeners()) log(`listener ${l.name} on ${l.address}`);
  if (admin !== null) log(`admin on http://${admin.address}`);
  if (config.ha !== null) {
    if (opts.node === null) {
      log('ha is configured but no --node (or TANDEM_NODE) was given: running without VIPs');
    } else {
      const { startHa } = await import('./ha/index.ts');
      instance.ha = await startHa({
        config: config.ha,
        node: opts.node,
        bus: instance.bus,
        ready: (vip: VipConfig) => instance.ready(vip.pools),
        log,
        leaseRenewFailed: (vip: string) => metrics.leaseRenewFailed(vip),
      });
    }
  }

  log('ready');
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      log(`${signal}: stopping (in-flight requests get up to ${config.shutdownTimeout} ms)`);
      instance.close()
        .then(() => admin?.close())
        .then(() => resolve(0), (err: Error) => {
          log(`stop failed: ${err.message}`);
          resolve(2);
        });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      instance.reload().then((r) => {
        if (r.ok) log('reloaded');
        else log(`reload rejected, running config kept:\n${r.errors.join('\n')}`);
      });
    });
  });
}
