// What the control plane shows operators and the HA it holds: the request counters the
// data planes' sums are written into, the Prometheus registry, the admin API and the
// VIP elector. Loaded only in the control plane's process (fastify, prom-client and the
// status page never reach a worker), and only when the control plane serves operators.

import type { VipConfig } from '../config/types.ts';
import { createMetrics, type Metrics } from '../admin/metrics.ts';
import { startAdmin, type AdminServer } from '../admin/server.ts';
import { RequestCounters } from '../dataplane/telemetry.ts';
import type { HaHandle } from '../ha/index.ts';
import type { Logger } from '../log.ts';
import type { ControlPlane } from './control-plane.ts';
import { GatheringRegistry } from './registry.ts';

export class OperatorSide {
  /** The counters the registry reads; the control plane writes the data planes' sums into them. */
  readonly counters: RequestCounters;
  readonly metrics: Metrics;
  admin: AdminServer | null;
  ha: HaHandle | null;
  private readonly log: Logger;

  private constructor(counters: RequestCounters, metrics: Metrics, log: Logger) {
    this.counters = counters;
    this.metrics = metrics;
    this.log = log;
    this.admin = null;
    this.ha = null;
  }

  /** Starts the metrics, the admin API (when configured) and HA (when configured and a node is given). */
  static async start(plane: ControlPlane, log: Logger): Promise<OperatorSide> {
    const counters = new RequestCounters();
    // Every scrape first gathers the data planes' counts into `counters`.
    const registry = new GatheringRegistry(() => plane.gather());
    const side = new OperatorSide(counters, createMetrics({ registry, counters }), log);
    side.metrics.observe(plane);
    const config = plane.config();
    try {
      if (config.admin !== null) {
        side.admin = await startAdmin(plane, side.metrics, { ...config.admin, log: log.child({ component: 'admin' }) });
      }
      if (config.ha !== null) {
        if (plane.node === null) {
          log.warn('ha is configured but no --node (or TANDEM_NODE) was given: running without VIPs');
        } else {
          const { startHa } = await import('../ha/index.ts');
          side.ha = await startHa({
            config: config.ha,
            node: plane.node,
            bus: plane.bus,
            ready: (vip: VipConfig) => plane.ready(vip.pools),
            log: log.child({ component: 'ha' }),
            leaseRenewFailed: (vip: string) => side.metrics.leaseRenewFailed(vip),
          });
        }
      }
    } catch (err) {
      await side.close();
      throw err;
    }
    return side;
  }

  /** The first step of a stop: VIPs go to the other node before anything stops serving. */
  async releaseVips(): Promise<void> {
    const ha = this.ha;
    this.ha = null;
    await ha?.stop().catch((err: Error) => this.log.error({ component: 'ha', err: err.message }, `ha stop: ${err.message}`));
  }

  async close(): Promise<void> {
    await this.releaseVips();
    await this.admin?.close();
  }
}
