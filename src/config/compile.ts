// Turns a validated raw config into the frozen runtime form of types.ts. Runs only
// when the file had no issues at all, so every required value is present here.
// Everything is copied: schema defaults are shared between reads and must not be
// frozen into one config.

import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import type {
  AdminConfig,
  BackendConfig,
  Config,
  EtcdStoreConfig,
  HaConfig,
  HealthCheckConfig,
  ListenerConfig,
  PoolConfig,
  RouteConfig,
  VipConfig,
} from './types.ts';
import { compileListenerTls, compileRouteActions, compileUpstreamTls } from './edge-compile.ts';
import type { RawBackend, RawConfig, RawHa, RawListener, RawPool, RawRoute, RawVip } from './schema.ts';

/** Builds the runtime config; `file` is the absolute path of the config file. */
export function compile(raw: RawConfig, file: string, dir: string): Config {
  const pools = new Map<string, PoolConfig>();
  for (const [name, pool] of present(raw.pools)) pools.set(name, compilePool(name, pool, dir));
  const admin: AdminConfig | null =
    raw.admin === null
      ? null
      : {
          host: raw.admin.address.host,
          port: raw.admin.address.port,
          token: raw.admin.token === null || raw.admin.token === '' ? null : raw.admin.token,
          authReads: raw.admin.authReads,
        };
  const config: Config = {
    file,
    workers: raw.workers === 'auto' ? availableParallelism() : raw.workers,
    shutdownTimeout: raw.shutdownTimeout,
    log: { level: raw.log.level, format: raw.log.format },
    trustedProxies: [...raw.trustedProxies],
    accessLog: raw.accessLog === null ? null : { path: raw.accessLog.path === 'stdout' ? 'stdout' : resolve(dir, raw.accessLog.path) },
    listeners: present(raw.listeners).map((l) => compileListener(l, dir)),
    routes: present(raw.routes).map(compileRoute),
    pools,
    admin,
    ha: raw.ha === null ? null : compileHa(raw.ha, dir),
  };
  return deepFreeze(config);
}

function compileListener(l: RawListener, dir: string): ListenerConfig {
  const address = present(l.address);
  return {
    name: present(l.name),
    host: address.host,
    port: address.port,
    tls: compileListenerTls(l, dir),
    http2: l.http2,
    proxyProtocol: l.proxyProtocol === null ? null : { from: [...(l.proxyProtocol.from ?? [])] },
    engine: l.engine ?? defaultEngine(l),
    headersTimeout: l.timeouts.headers,
    requestTimeout: l.timeouts.request,
    keepAliveTimeout: l.timeouts.keepAlive,
    maxHeaderSize: l.maxHeaderSize,
    sendTimeout: l.timeouts.send,
    maxConnections: l.maxConnections,
  };
}

/**
 * The fast engine serves plain HTTP/1.1; a listener with TLS, HTTP/2 or the PROXY
 * protocol runs on node. TANDEM_ENGINE=node makes node the default everywhere.
 */
function defaultEngine(l: RawListener): 'fast' | 'node' {
  if (l.tls !== null || l.http2 || l.proxyProtocol !== null) return 'node';
  return process.env.TANDEM_ENGINE === 'node' ? 'node' : 'fast';
}

function compileRoute(r: RawRoute): RouteConfig {
  const hosts: string[] = [];
  const hostSuffixes: string[] = [];
  for (const h of r.match.host) {
    const host = h.toLowerCase();
    if (host.startsWith('*.')) hostSuffixes.push(host.slice(1));
    else hosts.push(host);
  }
  return {
    name: present(r.name),
    listeners: [...r.listeners],
    match: {
      hosts,
      hostSuffixes,
      pathPrefix: r.match.pathPrefix,
      methods: r.match.methods.map((m) => m.toUpperCase()),
      headers: [...r.match.headers].map(([name, value]) => [name.toLowerCase(), value] as const),
    },
    pool: present(r.pool),
    ...compileRouteActions(r),
    rateLimit: r.rateLimit === null ? null : {
      requests: present(r.rateLimit.requests),
      per: r.rateLimit.per,
      burst: r.rateLimit.burst ?? present(r.rateLimit.requests),
      clients: r.rateLimit.clients,
    },
  };
}

function compilePool(name: string, p: RawPool, dir: string): PoolConfig {
  const hc = p.healthCheck;
  const healthCheck: HealthCheckConfig | null =
    hc === null
      ? null
      : {
          path: hc.path,
          method: hc.method,
          port: hc.port,
          host: hc.host,
          interval: hc.interval,
          timeout: hc.timeout,
          rise: hc.rise,
          fall: hc.fall,
          expectStatus: hc.expect.status.map(([low, high]) => [low, high] as const),
          expectBody: hc.expect.body,
          startUnhealthy: hc.startUnhealthy,
        };
  return {
    name,
    balance: p.balance,
    backends: present(p.backends).map(compileBackend),
    hostHeader: p.hostHeader,
    healthCheck,
    outlier: p.outlier === null ? null : { ...p.outlier },
    connectTimeout: p.timeouts.connect,
    responseTimeout: p.timeouts.response,
    idleTimeout: p.timeouts.idle,
    queueSize: p.queue.size,
    queueTimeout: p.queue.timeout,
    retries: p.retries,
    retryBudgetPercent: p.retryBudget,
    slowStart: p.slowStart,
    panic: p.panic,
    sticky: p.sticky === null ? null : { cookie: p.sticky.cookie, ttl: p.sticky.ttl },
    debugHeaders: p.debugHeaders,
    tls: compileUpstreamTls(p, dir),
    proxyProtocol: p.proxyProtocol,
  };
}

function compileBackend(b: RawBackend): BackendConfig {
  const url = present(b.url);
  return {
    name: present(b.name),
    origin: url.origin,
    protocol: url.protocol,
    host: url.host,
    port: url.port,
    weight: b.weight,
    backup: b.backup,
    maxConnections: b.maxConnections,
  };
}

function compileHa(ha: RawHa, dir: string): HaConfig {
  const nodes = [...present(ha.nodes)].map(([id, n]) => ({ id, host: present(n.address).host, port: present(n.address).port }));
  return {
    store: ha.store,
    etcd: ha.etcd === null ? null : compileEtcd(ha.etcd, dir),
    nodes,
    secret: ha.secret === null || ha.secret === '' ? null : ha.secret,
    multicastGroup: ha.multicast,
    leaseDuration: ha.lease.duration,
    renewEvery: ha.lease.renewEvery,
    hook: ha.hook === null || ha.hook === 'builtin' ? ha.hook : resolve(dir, ha.hook),
    agent: ha.agent,
    hookTimeout: ha.hookTimeout,
    garpCount: ha.garp.count,
    garpInterval: ha.garp.interval,
    garpRefresh: ha.garp.refresh,
    vips: spreadPriorities(present(ha.vips), nodes).map(([v, priority]) => compileVip(v, priority)),
  };
}

function compileEtcd(etcd: NonNullable<RawHa['etcd']>, dir: string): EtcdStoreConfig {
  const file = (f: string | null | undefined) => (f == null ? null : resolve(dir, f));
  const tls = etcd.tls;
  return {
    endpoints: present(etcd.endpoints).map((e) => e.origin),
    prefix: etcd.prefix,
    tls: tls === null ? null : { ca: file(tls.ca), cert: file(tls.cert), key: file(tls.key) },
    auth: etcd.auth === null ? null : { user: present(etcd.auth.user), password: present(etcd.auth.password) },
  };
}

/**
 * The priorities of each VIP: its own map, or, for the VIPs that give none, an order of
 * the nodes that spreads them. The i-th such VIP prefers node i mod N, so with every node
 * up each holds ⌈M/N⌉ or ⌊M/N⌋ of them; the VIPs that prefer the same node fall back to
 * different next nodes in turn, so a node's death spreads its VIPs over the survivors.
 * Priorities: 150 for the first choice, 120 for the second, then 100, 99, ...
 */
function spreadPriorities(vips: readonly RawVip[], nodes: readonly { id: string }[]): [RawVip, Record<string, number>][] {
  let spread = 0;
  return vips.map((v) => {
    const priority: Record<string, number> = {};
    if (v.priority !== null) {
      for (const [id, p] of v.priority) priority[id] = p;
      return [v, priority];
    }
    const n = nodes.length;
    const first = spread % n;
    const round = Math.floor(spread / n);
    spread++;
    const rest = Array.from({ length: n - 1 }, (_, k) => nodes[(first + 1 + k) % n].id);
    const shift = rest.length === 0 ? 0 : round % rest.length;
    const order = [nodes[first].id, ...rest.slice(shift), ...rest.slice(0, shift)];
    order.forEach((id, k) => (priority[id] = k === 0 ? 150 : k === 1 ? 120 : 102 - k));
    return [v, priority];
  });
}

function compileVip(v: RawVip, priority: Record<string, number>): VipConfig {
  return {
    name: present(v.name),
    address: `${present(v.address).ip}/${present(v.address).prefix}`,
    interface: present(v.interface),
    priority,
    preempt: v.preempt.enabled,
    preemptDelay: v.preempt.delay,
    pools: [...v.pools],
  };
}

function present<T>(value: T | undefined): T {
  if (value === undefined) throw new Error('config compile: a required value is missing though validation passed');
  return value;
}

/** Freezes objects, arrays and maps all the way down (a frozen Map can still be set, so its mutators are disabled too). */
function deepFreeze<T>(value: T): T {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return value;
  if (value instanceof Map) {
    for (const v of value.values()) deepFreeze(v);
    const refuse = () => {
      throw new TypeError('the compiled config is read-only');
    };
    Object.defineProperties(value, { set: { value: refuse }, delete: { value: refuse }, clear: { value: refuse } });
  } else {
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return Object.freeze(value);
}
