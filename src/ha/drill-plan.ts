// What `tandem drill` works on: the nodes of a pair (from the config file or from --admin
// URLs), and, per VIP, who holds it, who would take it, and what is not ready for a move.
// Everything is read through each node's admin API, so the drill sees what operators see.

import { loadConfigFile } from '../config/load.ts';
import { TandemError, errors } from '../errors.ts';
import { AdminClient, listenerPort, vipHost, type NodeStatus, type NodeVip } from './admin-client.ts';
import type { ProbeTarget } from './probe.ts';

export interface DrillNode {
  /** The id from the config, or, for --admin, the one the node reports. */
  id: string;
  readonly client: AdminClient;
}

/** What the config says about how a VIP comes back, when a config was given. */
export interface VipPolicy {
  readonly preempt: boolean;
  readonly preemptDelay: number;
  readonly priority: Readonly<Record<string, number>>;
}

export interface DrillSetup {
  readonly nodes: DrillNode[];
  readonly policies: ReadonlyMap<string, VipPolicy>;
}

/** A node's view as read now: its status, or why it could not be read. */
export type NodeView = { readonly node: DrillNode; readonly status: NodeStatus | null; readonly error: string | null };

export interface VipPlan {
  readonly vip: string;
  readonly holder: string | null;
  /** The node expected to take the VIP: the best ready other node. */
  readonly peer: string | null;
  readonly target: ProbeTarget | null;
  readonly leaseDuration: number;
  /** Everything that stands against a move, one line each; empty when ready. */
  readonly notReady: string[];
}

const WILDCARD = new Set(['', '0.0.0.0', '::', '[::]']);

/** Finds the nodes and their admin URLs; throws TandemError(ARGUMENTS) for what cannot work. */
export async function resolveSetup(opts: { config: string | null; admin: readonly string[]; token: string | null }): Promise<DrillSetup & { token: string | null }> {
  if (opts.config === null && opts.admin.length === 0) throw new TandemError(errors.ARGUMENTS, 'needs -c FILE or --admin URL for each node');
  for (const url of opts.admin) {
    if (!/^https?:\/\/[^/]+/.test(url)) throw new TandemError(errors.ARGUMENTS, `--admin ${url}: not an http(s) URL`);
  }
  let token = opts.token;
  const policies = new Map<string, VipPolicy>();
  let urls: { id: string; url: string }[] = opts.admin.map((url) => ({ id: url, url }));
  if (opts.config !== null) {
    const loaded = await loadConfigFile(opts.config, { env: process.env, node: null });
    if (!loaded.ok) throw new TandemError(errors.ARGUMENTS, `invalid config:\n${loaded.errors.join('\n')}`);
    const { ha, admin } = loaded.config;
    if (ha === null) throw new TandemError(errors.ARGUMENTS, `${opts.config} has no ha section: nothing to drill`);
    for (const v of ha.vips) policies.set(v.name, { preempt: v.preempt, preemptDelay: v.preemptDelay, priority: v.priority });
    token ??= admin?.token ?? null;
    if (opts.admin.length === 0) {
      const host = admin?.host ?? '127.0.0.1';
      const port = admin?.port ?? 9901;
      if (!WILDCARD.has(host)) {
        throw new TandemError(errors.ARGUMENTS, `admin.address ${host}:${port} is one host's address, so the other nodes' admin APIs cannot be found from the config; pass --admin URL for each node`);
      }
      urls = ha.nodes.map((n) => ({ id: n.id, url: `http://${n.host.includes(':') ? `[${n.host}]` : n.host}:${port}` }));
    }
  }
  if (urls.length < 2) throw new TandemError(errors.ARGUMENTS, 'a drill needs at least two nodes (repeat --admin URL for each)');
  return { nodes: urls.map((u) => ({ id: u.id, client: new AdminClient(u.url, token) })), policies, token };
}

/** Reads every node's status at once. */
export async function readViews(nodes: readonly DrillNode[]): Promise<NodeView[]> {
  return Promise.all(nodes.map(async (node) => {
    try {
      const status = await node.client.status();
      node.id = status.node;
      return { node, status, error: null };
    } catch (err) {
      return { node, status: null, error: (err as Error).message };
    }
  }));
}

/** The node's own state for `vip`, or null when unknown. */
export function vipOf(view: NodeView, vip: string): NodeVip | null {
  return view.status?.vips.find((v) => v.name === vip) ?? null;
}

/** Nodes that say they hold `vip` now. */
export function masters(views: readonly NodeView[], vip: string): string[] {
  return views.filter((v) => vipOf(v, vip)?.state === 'MASTER').map((v) => v.node.id);
}

/** Who holds `vip`, who would take it, what to probe, and what is not ready. */
export function planVip(views: readonly NodeView[], vip: string, url: URL | null): VipPlan {
  const notReady: string[] = [];
  for (const v of views) if (v.status === null) notReady.push(`${v.node.client.url} cannot be read: ${v.error}`);
  const held = masters(views, vip);
  if (held.length === 0) notReady.push(`no node holds ${vip}`);
  if (held.length > 1) notReady.push(`${held.join(' and ')} all hold ${vip}`);
  const holder = held.length === 1 ? held[0] : null;
  let leaseDuration = 1000;
  const candidates: { id: string; priority: number }[] = [];
  for (const v of views) {
    if (v.status === null) continue;
    const id = v.node.id;
    const mine = vipOf(v, vip);
    if (mine === null) {
      notReady.push(`${id} has no VIP ${vip}`);
      continue;
    }
    leaseDuration = mine.leaseDuration;
    for (const l of v.status.listeners) if (!l.bound) notReady.push(`${id}: listener ${l.name} (${l.address}) is not bound`);
    for (const p of v.status.pools) if (!p.available) notReady.push(`${id}: pool ${p.name} has no available backend`);
    if (holder !== null && mine.holder !== holder) notReady.push(`${id} sees ${mine.holder ?? 'no one'} as the holder of ${vip}, not ${holder}`);
    if (id === holder) continue;
    if (mine.state !== 'BACKUP') notReady.push(`${id} is ${mine.state} for ${vip}, not BACKUP`);
    else if (mine.priority <= 0) notReady.push(`${id} has priority 0 for ${vip} and never takes it`);
    else candidates.push({ id, priority: mine.priority });
  }
  candidates.sort((a, b) => b.priority - a.priority || (a.id < b.id ? -1 : 1));
  const peer = candidates[0]?.id ?? null;
  if (peer === null && holder !== null) notReady.push(`no other node is ready to take ${vip}`);
  const target = url !== null ? { kind: 'url' as const, url } : probeTarget(views, vip, holder);
  if (target === null && holder !== null) notReady.push(`${holder} has no listener to probe ${vip} on; pass --url`);
  return { vip, holder, peer, target, leaseDuration, notReady };
}

/** The VIP's address on the port of the holder's first listener that accepts it. */
function probeTarget(views: readonly NodeView[], vip: string, holder: string | null): ProbeTarget | null {
  const view = views.find((v) => v.node.id === holder);
  const mine = view === undefined ? null : vipOf(view, vip);
  if (view?.status == null || mine === null) return null;
  const host = vipHost(mine.address);
  const listener = view.status.listeners.find((l) => {
    const h = l.address.slice(0, l.address.lastIndexOf(':'));
    return WILDCARD.has(h) || h === host || h === `[${host}]`;
  });
  if (listener === undefined) return null;
  return { kind: 'tcp', host, port: listenerPort(listener.address) };
}
