// The second layer of validation: what a schema cannot see. Names are unique,
// references point at something that exists, and fields that depend on each other
// agree. Every check tolerates values the schema already rejected (undefined), so a
// file with both kinds of mistakes reports all of them in one run.

import { accessSync, constants, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { formatDuration } from './duration.ts';
import { checkListenerTls, checkPoolTls, checkRouteActions } from './edge-validate.ts';
import { isLoopback } from './net.ts';
import { formatPath } from './reader.ts';
import { suggest } from './suggest.ts';
import type { Context, Spot } from './reader.ts';
import type { RawConfig, RawHa } from './schema.ts';

export interface ValidateOptions {
  /** The node id given with `--node`; null or undefined: not given (fine for `check`). */
  readonly node?: string | null;
}

/** Records every semantic mistake of `raw` in `cx`. */
export function validate(raw: RawConfig, cx: Context, options: ValidateOptions = {}): void {
  // A collection that is missing or invalid has been reported already; references
  // into it are not checked (null), or every route would repeat that one mistake.
  const listenerNames = raw.listeners === undefined ? null : checkListeners(raw, cx);
  const poolNames = raw.pools === undefined ? null : new Set(cx.declaredKeys(raw.pools));
  checkRoutes(raw, cx, listenerNames, poolNames);
  checkPools(raw, cx);
  checkAdmin(raw, cx);
  if (raw.ha !== null) checkHa(raw.ha, cx, poolNames, options.node ?? null);
}

function checkListeners(raw: RawConfig, cx: Context): Set<string> {
  const listeners = raw.listeners ?? [];
  const names = unique(cx, listeners, 'name', 'listener');
  const addresses = new Map<string, Spot>();
  for (const l of listeners) {
    if (l.address !== undefined && l.address.port !== 0) {
      const key = `${l.address.host}:${l.address.port}`;
      const first = addresses.get(key);
      if (first !== undefined) cx.failAt(cx.at(l, 'address'), `${key} is already used by ${formatPath(first.path)} (each listener needs its own address)`);
      else addresses.set(key, cx.at(l, 'address'));
    }
    const t = l.timeouts;
    // node:http refuses a headers timeout longer than a non-zero request timeout.
    if (t.request > 0 && t.headers > t.request) {
      cx.failAt(cx.at(t, 'headers'), `must not be longer than timeouts.request (at most ${formatDuration(t.request)}; got ${formatDuration(t.headers)})`);
    }
    checkListenerTls(l, cx, (spot, file, valid) => checkReadable(cx, spot, file, valid));
    if (l.engine === 'fast') {
      const needsNode = l.tls != null ? 'tls' : l.http2 === true ? 'http2' : l.proxyProtocol != null ? 'proxyProtocol' : null;
      if (needsNode !== null) cx.failAt(cx.at(l, 'engine'), `the fast engine serves plain HTTP/1.1; this listener sets ${needsNode} (use engine: node, or leave engine out)`);
    }
  }
  return names;
}

function checkRoutes(raw: RawConfig, cx: Context, listenerNames: Set<string> | null, poolNames: Set<string> | null): void {
  const routes = raw.routes ?? [];
  unique(cx, routes, 'name', 'route');
  for (const r of routes) {
    r.listeners.forEach((name, i) => exists(cx, cx.at(r.listeners, i), name, listenerNames, 'listener'));
    if (r.pool !== undefined) exists(cx, cx.at(r, 'pool'), r.pool, poolNames, 'pool');
    checkRouteActions(r, cx);
  }
}

function checkPools(raw: RawConfig, cx: Context): void {
  for (const pool of raw.pools?.values() ?? []) {
    const backends = pool.backends ?? [];
    unique(cx, backends, 'name', 'backend in this pool');
    const complete = backends.every((b) => b.name !== undefined && b.url !== undefined);
    if (backends.length > 0 && complete && !backends.some((b) => b.weight > 0 && !b.backup)) {
      cx.failAt(cx.at(pool, 'backends'), 'has no backend that can take traffic (needs at least one with weight above 0 and backup: false)');
    }
    checkPoolTls(pool, cx, (spot, file, valid) => checkReadable(cx, spot, file, valid));
    const hc = pool.healthCheck;
    if (hc !== null && hc.timeout >= hc.interval) {
      cx.failAt(cx.at(hc, 'timeout'), `must be shorter than interval (below ${formatDuration(hc.interval)}; got ${formatDuration(hc.timeout)})`);
    }
    const o = pool.outlier;
    if (o !== null && o.maxEjectFor < o.ejectFor) {
      cx.failAt(cx.at(o, 'maxEjectFor'), `must not be shorter than ejectFor (at least ${formatDuration(o.ejectFor)}; got ${formatDuration(o.maxEjectFor)})`);
    }
  }
}

function checkAdmin(raw: RawConfig, cx: Context): void {
  const admin = raw.admin;
  if (admin === null) return;
  const hasToken = admin.token !== null && admin.token !== '';
  if (!hasToken && !isLoopback(admin.address.host)) {
    cx.failAt(
      cx.at(admin, 'address'),
      `${admin.address.host} is reachable from other machines, so the admin API needs a token (set admin.token, e.g. "\${TANDEM_ADMIN_TOKEN}", or use 127.0.0.1)`,
    );
  }
  if (admin.authReads && !hasToken) cx.failAt(cx.at(admin, 'authReads'), 'needs admin.token to be set (set a token, or authReads: false)');
  if (admin.address.port !== 0) {
    for (const l of raw.listeners ?? []) {
      if (l.address !== undefined && l.address.host === admin.address.host && l.address.port === admin.address.port) {
        cx.failAt(cx.at(admin, 'address'), `${l.address.host}:${l.address.port} is already used by listener ${l.name ?? '?'} (the admin API needs its own address)`);
      }
    }
  }
}

function checkHa(ha: RawHa, cx: Context, poolNames: Set<string> | null, node: string | null): void {
  const nodes = ha.nodes ?? new Map();
  const nodeIds = ha.nodes === undefined ? null : new Set(cx.declaredKeys(ha.nodes));
  if (ha.store === 'etcd' && ha.etcd === null) cx.failAt(cx.at(ha, 'etcd'), 'is missing (store: etcd needs etcd: { endpoints: [http://host:2379] })');
  if (ha.store === 'peer' && ha.etcd !== null) cx.failAt(cx.at(ha, 'etcd'), 'is only used with store: etcd (set store: etcd, or remove etcd)');
  if (ha.store === 'etcd' && ha.etcd !== null) checkEtcd(ha, ha.etcd, cx);
  if (ha.store === 'peer' && nodes.size > 1 && (ha.secret === null || ha.secret === '')) {
    cx.failAt(
      cx.at(ha, 'secret'),
      `is ${ha.secret === '' ? 'empty' : 'missing'} (the peer store with more than one node needs a shared secret of at least 16 characters, e.g. secret: \${TANDEM_HA_SECRET})`,
    );
  }
  const addresses = new Map<string, string>();
  for (const [id, n] of nodes) {
    if (n.address === undefined) continue;
    const key = `${n.address.host}:${n.address.port}`;
    const first = addresses.get(key);
    if (first !== undefined) cx.failAt(cx.at(n, 'address'), `${key} is already the address of node ${first} (each node needs its own address)`);
    else addresses.set(key, id);
  }
  if (ha.agent && ha.hook !== null) cx.failAt(cx.at(ha, 'agent'), 'cannot be true with a hook: the VIPs are moved either by this process (hook) or by the vip-agent sidecar (agent: true), not both');
  const lease = ha.lease;
  // The holder must get at least three adverts into every lease, or one lost packet
  // would make the others take over from a healthy holder.
  if (lease.renewEvery * 3 > lease.duration) {
    cx.failAt(
      cx.at(lease, 'renewEvery'),
      `must be at most a third of lease.duration (at most ${formatDuration(Math.floor(lease.duration / 3))} for ${formatDuration(lease.duration)}; got ${formatDuration(lease.renewEvery)})`,
    );
  }
  const vips = ha.vips ?? [];
  unique(cx, vips, 'name', 'VIP');
  const vipAddresses = new Map<string, string>();
  for (const v of vips) {
    if (v.priority !== null) {
      for (const id of v.priority.keys()) exists(cx, cx.at(v.priority, id), id, nodeIds, 'node', 'ha.nodes');
    }
    v.pools.forEach((name, i) => exists(cx, cx.at(v.pools, i), name, poolNames, 'pool'));
    if (v.address !== undefined) {
      const first = vipAddresses.get(v.address.ip);
      if (first !== undefined) cx.failAt(cx.at(v, 'address'), `${v.address.ip} is already the address of VIP ${first} (each VIP needs its own address)`);
      else vipAddresses.set(v.address.ip, v.name ?? '?');
    }
  }
  if (node !== null && nodeIds !== null && !nodeIds.has(node)) {
    const near = suggest(node, [...nodeIds]);
    cx.failAt(cx.at(ha, 'nodes'), `--node ${node} is not a node of this config (${near !== null ? `did you mean ${near}? ` : ''}nodes: ${[...nodeIds].join(', ')})`);
  }
}

function checkEtcd(ha: RawHa, etcd: NonNullable<RawHa['etcd']>, cx: Context): void {
  const tls = etcd.tls;
  if (tls !== null) {
    for (const which of ['ca', 'cert', 'key'] as const) {
      const file = tls[which];
      if (file != null) checkReadable(cx, cx.at(tls, which), resolve(cx.dir, file), `a readable PEM ${which === 'key' ? 'key' : 'certificate'} file`);
    }
    if ((tls.cert == null) !== (tls.key == null)) {
      cx.failAt(cx.at(tls, tls.cert == null ? 'key' : 'cert'), `needs ${tls.cert == null ? 'cert' : 'key'} too (a client certificate is a cert and its key)`);
    }
    const endpoints = etcd.endpoints;
    endpoints?.forEach((url, i) => {
      if (url !== undefined && url.protocol !== 'https:') cx.failAt(cx.at(endpoints, i), `${url.origin} is plain HTTP, but etcd.tls is set (use https://, or remove tls)`);
    });
  }
  const auth = etcd.auth;
  if (auth !== null) {
    if (auth.user === '') cx.failAt(cx.at(auth, 'user'), 'is empty (must be an etcd user name)');
    if (auth.password === '') cx.failAt(cx.at(auth, 'password'), 'is empty (must be the password of the etcd user, e.g. password: ${TANDEM_ETCD_PASSWORD})');
  }
  // etcd leases are whole seconds, at least one.
  const d = ha.lease.duration;
  if (d < 1000 || d % 1000 !== 0) {
    cx.failAt(cx.at(ha.lease, 'duration'), `must be a whole number of seconds with store: etcd (etcd leases are whole seconds; got ${formatDuration(d)})`);
  }
}

/** Reports each later item whose `key` repeats an earlier one; returns the names seen. */
function unique<T extends object>(cx: Context, items: readonly T[], key: keyof T & string, what: string): Set<string> {
  const seen = new Map<string, T>();
  for (const item of items) {
    const value = item[key];
    if (typeof value !== 'string') continue;
    const first = seen.get(value);
    if (first !== undefined) {
      const firstSpot = cx.at(first, key);
      cx.failAt(cx.at(item, key), `duplicate name "${value}" (already used by ${formatPath(firstSpot.path.slice(0, -1))}; each ${what} needs its own name)`);
    } else {
      seen.set(value, item);
    }
  }
  return new Set(seen.keys());
}

/** Reports a reference to a name that is not defined. */
function exists(cx: Context, spot: Spot, name: string, names: Set<string> | null, what: string, where = `${what}s`): void {
  if (names === null || names.has(name)) return;
  const near = suggest(name, [...names]);
  const known = names.size === 0 ? `there are no ${what}s` : `${where}: ${[...names].join(', ')}`;
  cx.failAt(spot, `no ${what} named "${name}" (${near !== null ? `did you mean ${near}? ` : ''}${known})`);
}

function checkReadable(cx: Context, spot: Spot, file: string, valid: string): void {
  try {
    if (!statSync(file).isFile()) {
      cx.failAt(spot, `${file} is not a file (must be ${valid})`);
      return;
    }
    accessSync(file, constants.R_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'cannot be read' : `cannot be used (${code ?? String(error)})`;
    cx.failAt(spot, `${file} ${why} (must be ${valid})`);
  }
}
