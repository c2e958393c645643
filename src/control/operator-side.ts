// What the control plane shows operators and the HA it holds: the request counters the
// data planes' sums are written into, the Prometheus registry, the admin API and the
// VIP elector. Loaded only in the control plane's process (fastify, prom-client and the
// status page never reach a worker), and only when the control plane serves operators.

import type { Config, VipConfig } from '../config/types.ts';
import { createMetrics, type Metrics } from '../admin/metrics.ts';
import { startAdmin, type ReloadableAdmin } from '../admin/server.ts';
import { RequestCounters } from '../dataplane/telemetry.ts';
import type { HaHandle, Vacating } from '../ha/index.ts';
import type { Logger } from '../log.ts';
import type { ControlPlane } from './control-plane.ts';
import { GatheringRegistry } from './registry.ts';

/** A reload's section, checked and bound: commit() applies it, abort() lets go of it. */
export interface PreparedSection {
  commit(): void;
  abort(): Promise<void>;
}

export class OperatorSide {
  /** The counters the registry reads; the control plane writes the data planes' sums into them. */
  readonly counters: RequestCounters;
  readonly metrics: Metrics;
  admin: ReloadableAdmin | null;
  ha: HaHandle | null;
  private readonly plane: ControlPlane;
  private readonly log: Logger;

  private constructor(plane: ControlPlane, counters: RequestCounters, metrics: Metrics, log: Logger) {
    this.plane = plane;
    this.counters = counters;
    this.metrics = metrics;
    this.log = log;
    this.admin = null;
    this.ha = null;
  }

  /** Starts the metrics, the admin API (when configured) and HA (when configured and a node is given). */
  /** `vacating`: the data planes' side of a planned handover (src/dataplane/vacate.ts). */
  static async start(plane: ControlPlane, vacating: Vacating, log: Logger): Promise<OperatorSide> {
    const counters = new RequestCounters();
    // Every scrape first gathers the data planes' counts into `counters`.
    const registry = new GatheringRegistry(() => plane.gather());
    const side = new OperatorSide(plane, counters, createMetrics({ registry, counters }), log);
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
            vacating,
          });
        }
      }
    } catch (err) {
      await side.close();
      throw err;
    }
    return side;
  }

  /**
   * A reload's admin section, checked and bound but not applied: the admin API starts,
   * stops, moves or takes a new token or authReads at commit. Throws (TandemError) when
   * the section cannot be applied, e.g. its new address cannot be bound; nothing changed then.
   */
  async prepare(config: Config): Promise<PreparedSection> {
    const next = config.admin;
    const running = this.admin;
    if (running === null && next === null) return { commit: () => {}, abort: async () => {} };
    if (running === null) {
      const started = await startAdmin(this.plane, this.metrics, next!);
      return {
        commit: () => {
          this.admin = started;
          this.log.info({ address: started.address }, `admin on http://${started.address}`);
        },
        abort: () => started.close(),
      };
    }
    if (next === null) {
      return {
        commit: () => {
          this.admin = null;
          // A reload asked through this API is answered before it closes.
          void running.close().then(() => this.log.info('admin API stopped: the config has no admin section now'));
        },
        abort: async () => {},
      };
    }
    const prepared = await running.prepare(next);
    return {
      commit: () => {
        prepared.commit();
        if (prepared.changes.length > 0) this.log.info({ changed: prepared.changes }, `admin: the reload changed ${prepared.changes.join(', ')}`);
        if (prepared.address !== null) this.log.info({ address: prepared.address }, `admin on http://${prepared.address}`);
      },
      abort: () => prepared.abort(),
    };
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
