// High availability for one instance: a lease store, and per VIP an elector with its
// hook. `tandem run` calls startHa once the listeners are bound; the admin API reads
// status() and calls release(); shutdown calls stop() before the listeners close, so the
// VIPs move to the peer while this node still serves.

import type { HaConfig, VipConfig } from '../config/types.ts';
import { TandemError, errors } from '../errors.ts';
import type { EventBus } from '../events.ts';
import type { Logger } from '../log.ts';
import { Elector, type VipStatus } from './elector.ts';
import { AgentHook } from './agent-hook.ts';
import { Announcer } from './announcer.ts';
import { BUILTIN_HOOK, BuiltinHook } from './builtin-hook.ts';
import { VipHook, type HookRunner } from './hook.ts';
import { openEtcdStore, type StoreBasics } from './stores/etcd/open.ts';
import { PeerStore } from './stores/peer/store.ts';

export type { VipStatus } from './elector.ts';
export type { PeerStoreStats } from './stores/peer/store.ts';

export interface HaOptions {
  readonly config: HaConfig;
  /** Which of `config.nodes` this instance is. */
  readonly node: string;
  readonly bus: EventBus;
  /** True when this instance can serve `vip` (listeners bound, an available backend in its pools). */
  readonly ready: (vip: VipConfig) => boolean;
  readonly log: Logger;
  /** What the data planes do with the connections on a VIP's address when it moves. */
  readonly vacating?: Vacating;
  /** Called on each failed lease renewal, for `tandem_lease_renew_failures_total{vip}`. */
  readonly leaseRenewFailed?: (vip: string) => void;
}

/** The data planes' side of a planned handover (src/dataplane/vacate.ts); `address` has no prefix length. */
export interface Vacating {
  /**
   * A held VIP's address is about to move to another node (`leaving`), or stays or is
   * gone: wind down the connections on it. Resolves with those still open after `wait` ms.
   */
  vacate(address: string, leaving: boolean, wait: number): Promise<number>;
  /**
   * Its new holder serves, and this node is about to remove the address: resolves once
   * no request received on it awaits its answer, at most `wait` ms, with how many still do.
   */
  linger(address: string, wait: number): Promise<number>;
}

export interface HaHandle {
  /** Every VIP: state, holder, epoch, lease left. */
  status(): VipStatus[];
  /** Planned handover of a VIP this node holds; false only for an unknown VIP. */
  release(vip: string): Promise<boolean>;
  /** Hands over or releases every VIP (STOP hook), then closes the store. */
  stop(): Promise<void>;
  /**
   * Counters of the store: for peer, adverts sent, accepted, and dropped by reason (bad
   * MAC, unknown node, replay...); for etcd, requests, failed attempts and endpoint failovers.
   */
  storeStats(): Readonly<Record<string, number>>;
}

/** Starts HA: removes this node's VIPs defensively, then competes for each. */
export async function startHa(opts: HaOptions): Promise<HaHandle> {
  const { config, node, log } = opts;
  if (!config.nodes.some((n) => n.id === node)) {
    throw new TandemError(errors.LEASE_STORE, `node ${node} is not one of ha.nodes (${config.nodes.map((n) => n.id).join(', ')})`);
  }
  // A handover waits for the successor's MASTER hook, which may take up to its timeout.
  const handoverTimeout = config.leaseDuration + config.hookTimeout;
  const electors = new Map<string, Elector>();
  // A preempted holder winds the VIP's connections down before it offers the lease.
  const beforeOffer = (key: string) => electors.get(key)?.departure.preempted() ?? Promise.resolve();
  const basics: StoreBasics = { node, leaseDuration: config.leaseDuration, renewEvery: config.renewEvery, handoverTimeout, beforeOffer, log };
  // Kept warm from the start, so that taking a VIP over starts no process.
  const announcer = config.hook === BUILTIN_HOOK ? new Announcer(log) : null;
  await announcer?.start();
  const store = await (config.store === 'etcd' ? openEtcdStore(config, basics) : startPeerStore(config, basics)).catch((err: unknown) => {
    announcer?.close();
    throw err;
  });
  const agentHooks: AgentHook[] = [];
  for (const vip of config.vips) {
    const hook = hookRunner(opts, vip, announcer);
    if (hook instanceof AgentHook) agentHooks.push(hook);
    electors.set(vip.name, new Elector({
      vip,
      node,
      store,
      hook,
      bus: opts.bus,
      ready: () => opts.ready(vip),
      leaseDuration: config.leaseDuration,
      renewEvery: config.renewEvery,
      handoverTimeout,
      log,
      renewFailed: opts.leaseRenewFailed === undefined ? undefined : () => opts.leaseRenewFailed?.(vip.name),
      vacate: opts.vacating === undefined ? undefined : vacating(opts.vacating, vip, log),
      linger: opts.vacating === undefined ? undefined : lingering(opts.vacating, vip, log),
    }));
  }
  // Every elector runs its BACKUP hook (the defensive removal) before it competes.
  await Promise.all([...electors.values()].map((e) => e.start()));
  log.info(
    { node, vips: [...electors.keys()], store: config.store, leaseDuration: config.leaseDuration, renewEvery: config.renewEvery },
    `ha: node ${node} competing for ${[...electors.keys()].join(', ')} (lease ${config.leaseDuration} ms, renew every ${config.renewEvery} ms)`,
  );

  let stopping: Promise<void> | null = null;
  return {
    status: () => [...electors.values()].map((e) => e.status()),
    storeStats: () => ({ ...store.stats }),
    release: async (name) => {
      const e = electors.get(name);
      if (e === undefined) return false;
      const released = await e.release();
      log.info({ vip: name, released }, released ? `ha: ${name} released` : `ha: ${name} release asked, but this node does not hold it`);
      return true;
    },
    stop: () => {
      stopping ??= (async () => {
        await Promise.all([...electors.values()].map((e) => e.stop()));
        for (const h of agentHooks) h.close();
        announcer?.close();
        await store.close();
        log.info('ha: stopped');
      })();
      return stopping;
    },
  };
}

/**
 * How long a planned handover waits for the connections on the VIP's address to close
 * after their next answer before it closes the idle rest and lets the VIP go; a busy one
 * still open then is reset when the VIP moves.
 */
export const VACATE_WAIT_MS = 1000;

/** Runs a data-plane step for `vip`: what it left over (0 when it failed, which is logged) and how long it took. */
async function timed(vip: VipConfig, log: Logger, what: string, step: () => Promise<number>): Promise<{ left: number; ms: number }> {
  const t0 = performance.now();
  const left = await step().catch((err: Error) => {
    log.warn({ vip: vip.name, err: err.message }, `ha: ${vip.name}: ${what} failed: ${err.message}`);
    return 0;
  });
  return { left, ms: Math.round(performance.now() - t0) };
}

/** The elector's side of `Vacating.vacate`: waits when patient, and logs what was still open. */
function vacating(data: Vacating, vip: VipConfig, log: Logger): (leaving: boolean, patient: boolean) => Promise<void> {
  const address = vip.address.split('/')[0];
  return async (leaving, patient) => {
    const { left: open, ms } = await timed(vip, log, 'winding down its connections', () => data.vacate(address, leaving, patient ? VACATE_WAIT_MS : 0));
    if (!leaving) return;
    if (open === 0) log.info({ vip: vip.name, address, ms }, `ha: ${vip.name}: connections on ${address} wound down in ${ms} ms; handing it over`);
    else log.warn({ vip: vip.name, address, ms, open }, `ha: ${vip.name}: ${open} connections on ${address} still busy after ${ms} ms; handing it over (they will be reset)`);
  };
}

/** The elector's side of `Vacating.linger`, logged: how long the address stayed for answers still owed. */
function lingering(data: Vacating, vip: VipConfig, log: Logger): () => Promise<void> {
  const address = vip.address.split('/')[0];
  return async () => {
    const { left: busy, ms } = await timed(vip, log, 'waiting for answers in flight', () => data.linger(address, VACATE_WAIT_MS));
    if (busy === 0) log.info({ vip: vip.name, address, ms }, `ha: ${vip.name}: answers in flight on ${address} sent in ${ms} ms; removing it`);
    else log.warn({ vip: vip.name, address, ms, busy }, `ha: ${vip.name}: ${busy} requests on ${address} still unanswered after ${ms} ms; removing it (their answers are lost)`);
  };
}

/** The hook runner of one VIP: in this process, or through the vip-agent sidecar. */
function hookRunner(opts: HaOptions, vip: VipConfig, announcer: Announcer | null): HookRunner {
  const { config, node, log } = opts;
  if (config.agent) {
    return new AgentHook({ bus: opts.bus, node, vip: vip.name, address: vip.address, interface: vip.interface, timeout: config.hookTimeout, log });
  }
  if (announcer !== null) {
    return new BuiltinHook({
      announcer, vip: vip.name, address: vip.address, interface: vip.interface, timeout: config.hookTimeout,
      garpCount: config.garpCount, garpInterval: config.garpInterval, garpRefresh: config.garpRefresh, log,
    });
  }
  return new VipHook({
    path: config.hook,
    node,
    vip: vip.name,
    address: vip.address,
    interface: vip.interface,
    timeout: config.hookTimeout,
    garpCount: config.garpCount,
    garpInterval: config.garpInterval,
    garpRefresh: config.garpRefresh,
    log,
  });
}

/** Starts the embedded peer store on this node's HA address. */
async function startPeerStore(config: HaConfig, basics: StoreBasics): Promise<PeerStore> {
  if (config.secret === null && config.nodes.length > 1) basics.log.warn('ha: no ha.secret: peer adverts are not authenticated');
  const store = new PeerStore({ ...basics, nodes: config.nodes, secret: config.secret, multicastGroup: config.multicastGroup });
  try {
    await store.start();
  } catch (err) {
    const self = config.nodes.find((n) => n.id === basics.node);
    throw new TandemError(errors.LEASE_STORE, `cannot bind the HA address ${self?.host}:${self?.port}: ${(err as Error).message}`, { cause: err });
  }
  return store;
}
