import type { VipConfig } from './config/types.ts';
import { createMetrics } from './admin/metrics.ts';
import { RequestCounters } from './dataplane/telemetry.ts';
import { startAdmin, type AdminServer } from './admin/server.ts';
import { ClusterPrimary } from './cluster/primary.ts';
import { GatheringRegistry } from './cluster/registry.ts';

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
 * `tandem run`: this process is the control plane (config, health checks, admin API,
 * HA) and forks the workers that serve the listeners (src/cluster/). Runs until
 * SIGTERM or SIGINT; resolves with the exit code after a graceful stop.
 */
export async function run(opts: RunOptions): Promise<number> {
  const counters = new RequestCounters();
  let primary: ClusterPrimary | null = null;
  // Every scrape first gathers the workers' counts into `counters`.
  const registry = new GatheringRegistry(() => primary?.gather() ?? Promise.resolve());
  const metrics = createMetrics({ registry, counters });
  primary = await ClusterPrimary.start({ file: opts.file, node: opts.node, workers: opts.workers, log, counters });
  const instance = primary;
  metrics.observe(instance);
  const config = instance.config();
  let admin: AdminServer | null = null;
  try {
    if (config.admin !== null) admin = await startAdmin(instance, metrics, config.admin);
  } catch (err) {
    await instance.close(0);
    throw err;
  }
  for (const l of instance.listeners()) log(`listener ${l.name} on ${l.address}`);
  if (admin !== null) log(`admin on http://${admin.address}`);
  if (config.ha !== null) {
    if (opts.node === null) {
      log('ha is configured but no --node (or TANDEM_NODE) was given: running without VIPs');
    } else {
      try {
        const { startHa } = await import('./ha/index.ts');
        instance.ha = await startHa({
          config: config.ha,
          node: opts.node,
          bus: instance.bus,
          ready: (vip: VipConfig) => instance.ready(vip.pools),
          log,
          leaseRenewFailed: (vip: string) => metrics.leaseRenewFailed(vip),
        });
      } catch (err) {
        // The workers would keep this process alive: stop them before giving up.
        await instance.close(0);
        await admin?.close();
        throw err;
      }
    }
  }

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
      }, (err: Error) => log(`reload failed, running config kept: ${err.message}`));
    });
    // Only now: whoever waits for `ready` may signal at once, and the default action of
    // SIGHUP would end the process.
    log('ready');
  });
}
