// What the benchmark measures: the origin alone, tandem with and without its features,
// the other ways of building a reverse proxy on Node, and HAProxy and nginx. Every
// target but `direct` is its own process, started here and stopped at the end of the run.

import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Backend } from '../backend.ts';
import { freePort, missingReason, startHaproxy, startNginx, type NativeOptions } from './native.ts';
import { spawnService, type Service } from './process.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const CLI = join(ROOT, 'src/cli.ts');

/** What a target needs to start: the origin, and a directory for its config files. */
export interface TargetContext {
  readonly backend: Backend;
  readonly dir: string;
}

/** A started target. */
export interface RunningTarget {
  /** Base URL the load goes to, without a trailing slash. */
  readonly url: string;
  /** Process (with its descendants) to read memory and CPU time from. */
  readonly pid: number | null;
  stop(): Promise<void>;
}

export interface TargetSpec {
  readonly id: string;
  /** Short name in tables and progress lines. */
  readonly label: string;
  readonly description: string;
  /** Not run unless asked for by id. */
  readonly optional: boolean;
  /** Why it cannot run on this machine (a program not installed); null or absent when it can. */
  missing?(): string | null;
  start(ctx: TargetContext): Promise<RunningTarget>;
}

/** The target every ratio is computed for. */
export const SUBJECT = 'tandem';

/** What serves a tandem listener (the listener's `engine`): set in every generated config, so TANDEM_ENGINE changes no target. */
export type Engine = 'fast' | 'node';

function running(service: Service, port: number): RunningTarget {
  return { url: `http://127.0.0.1:${port}`, pid: service.child.pid ?? null, stop: () => service.stop() };
}

/** A baseline script in this folder that takes upstream URLs and prints {"port":N}. */
function script(file: string, ...args: string[]): Promise<Service> {
  return spawnService([join(import.meta.dirname, file), ...args]);
}

/**
 * The realistic config: a few routes (host, prefix, method and header matches before the
 * catch-all the benchmark hits), two backends per pool, active health checks every 2 s,
 * passive outlier detection, the admin API with metrics, no access log.
 */
export function tandemConfig(backends: readonly string[], workers: number, engine: Engine = 'fast'): string {
  const list = backends.map((url, i) => `      - { name: app${i + 1}, url: "${url}" }`).join('\n');
  return `# Written by bench/targets/index.ts: tandem as the benchmark runs it.
workers: ${workers}
shutdownTimeout: 1s
listeners:
  - { name: web, address: 127.0.0.1:0, engine: ${engine} }
routes:
  - { name: api, match: { host: [api.example.com, "*.api.example.com"], pathPrefix: /api/, methods: [GET, POST] }, pool: api }
  - { name: internal, match: { pathPrefix: /internal/, headers: { x-internal: "1" } }, pool: api }
  - { name: assets, match: { pathPrefix: /assets/ }, pool: web }
  - { name: site, match: { pathPrefix: / }, pool: web }
pools:
  web:
    backends:
${list}
    healthCheck: { path: /healthz, interval: 2s, timeout: 1s }
    outlier: {}
  api:
    balance: least-connections
    backends:
${list}
    healthCheck: { path: /healthz, interval: 2s, timeout: 1s }
    outlier: {}
admin: { address: 127.0.0.1:0 }
`;
}

/** The same routes and backends with every optional feature left out. */
export function tandemBareConfig(backends: readonly string[], engine: Engine = 'fast'): string {
  const list = backends.map((url, i) => `      - { name: app${i + 1}, url: "${url}" }`).join('\n');
  return `# Written by bench/targets/index.ts: tandem with health checks, outlier detection and admin off.
shutdownTimeout: 1s
listeners:
  - { name: web, address: 127.0.0.1:0, engine: ${engine} }
routes:
  - { name: api, match: { host: [api.example.com, "*.api.example.com"], pathPrefix: /api/, methods: [GET, POST] }, pool: api }
  - { name: internal, match: { pathPrefix: /internal/, headers: { x-internal: "1" } }, pool: api }
  - { name: assets, match: { pathPrefix: /assets/ }, pool: web }
  - { name: site, match: { pathPrefix: / }, pool: web }
pools:
  web:
    backends:
${list}
  api:
    balance: least-connections
    backends:
${list}
admin: false
`;
}

/** HAProxy or nginx on a port picked here, in front of the origin's first port; skipped where not installed. */
function nativeTarget(id: 'haproxy' | 'nginx', label: string, description: string, start: (o: NativeOptions) => Promise<Service>): TargetSpec {
  return {
    id, label, description,
    optional: false,
    missing: () => missingReason(id),
    start: async (ctx) => {
      const port = await freePort();
      const service = await start({ dir: ctx.dir, port, upstream: ctx.backend.urls[0].slice('http://'.length) });
      return running(service, port);
    },
  };
}

/** A baseline script in this folder, in front of the origin's first port. */
function baseline(id: string, label: string, description: string, file: string, optional = false): TargetSpec {
  return {
    id, label, description, optional,
    start: async (ctx) => {
      const s = await script(file, ctx.backend.urls[0]);
      return running(s, s.info.port as number);
    },
  };
}

/** `tandem run` exactly as users start it, on `config` (the realistic one by default) with the listener on `engine`. */
async function startTandem(ctx: TargetContext, workers: number, config: 'realistic' | 'minimal' = 'realistic', engine: Engine = 'fast'): Promise<RunningTarget> {
  const file = join(ctx.dir, `tandem-${config}-${workers}w-${engine}.yaml`);
  const backends = ctx.backend.urls.slice(0, 2);
  writeFileSync(file, config === 'realistic' ? tandemConfig(backends, workers, engine) : tandemBareConfig(backends, engine));
  // Port 0 everywhere; the bound address comes from the `start` log line tests rely on too.
  const service = await spawnService([CLI, 'run', '-c', file, '--workers', String(workers)], {
    ready: /"event":"start"[^\n]*"listeners":\{"web":"([^"]+)"/,
  });
  const address = (service.info.match as string[])[0];
  return running(service, Number(address.slice(address.lastIndexOf(':') + 1)));
}

export const TARGETS: readonly TargetSpec[] = [
  {
    id: 'direct',
    label: 'origin (direct)',
    description: 'the node:http origin without any proxy: the ceiling',
    optional: false,
    start: async (ctx) => ({ url: ctx.backend.urls[0], pid: ctx.backend.service.child.pid ?? null, stop: async () => {} }),
  },
  {
    id: SUBJECT,
    label: 'tandem',
    description: 'tandem run --workers 1, engine: fast: 4 routes, 2 backends, health checks every 2s, outlier detection, metrics and admin on, access log off',
    optional: false,
    start: (ctx) => startTandem(ctx, 1),
  },
  {
    id: 'tandem-node',
    label: 'tandem, node engine',
    description: 'the same as tandem with engine: node on its listener (node:http in front, undici behind), so tandem ÷ this is what the fast engine changes',
    optional: false,
    start: (ctx) => startTandem(ctx, 1, 'realistic', 'node'),
  },
  {
    id: 'tandem-bare',
    label: 'data plane alone',
    description: 'the same data plane, engine and routes in one process, without the primary/worker split, health checks, outlier detection, metrics or admin',
    optional: false,
    start: async (ctx) => {
      const file = join(ctx.dir, 'tandem-bare.yaml');
      writeFileSync(file, tandemBareConfig(ctx.backend.urls.slice(0, 2)));
      const s = await script('tandem-bare.ts', file);
      return running(s, s.info.port as number);
    },
  },
  baseline('http-proxy-3', 'http-proxy-3', 'node:http + http-proxy-3 with a keep-alive http.Agent (maxSockets 128), xfwd on', 'http-proxy-3.ts'),
  baseline('fastify-http-proxy', '@fastify/http-proxy', 'fastify + @fastify/http-proxy over undici (connections 128, pipelining 1), logger off', 'fastify-http-proxy.ts'),
  baseline('undici-floor', 'bare undici (floor)', 'node:http + undici Pool.dispatch in ~60 lines, no features: what Node itself costs', 'undici-floor.ts'),
  baseline('net-floor', 'node:net + llhttp (floor)',
    "node:net sockets with llhttp (Node's own binding) on both sides, one keep-alive pool, X-Forwarded-For, no features: the floor of an engine past node:http (issue 16)",
    'net-floor.ts', true),
  nativeTarget('haproxy', 'HAProxy', 'haproxy -db, nbthread 1, http-reuse always (idle origin connections shared), option forwardfor, no logging', startHaproxy),
  nativeTarget('nginx', 'nginx', "nginx -g 'daemon off;', 1 worker_process, upstream keepalive 128 over HTTP/1.1, X-Forwarded-For set, access log off", startNginx),
  {
    id: 'tandem-min',
    label: 'tandem, features off',
    description: 'tandem run --workers 1 without health checks, outlier detection or admin (request metrics are still counted): the same process model as tandem, so tandem ÷ this is what the features cost',
    optional: false,
    start: (ctx) => startTandem(ctx, 1, 'minimal'),
  },
  {
    id: 'tandem-2w',
    label: 'tandem, 2 workers',
    description: 'tandem run --workers 2 on the realistic config (on 2 cores it competes with the load generator and the origin)',
    optional: true,
    start: (ctx) => startTandem(ctx, 2),
  },
];

/** The targets for a list of ids (unknown ids throw), or the default set. */
export function selectTargets(ids: readonly string[] | undefined): TargetSpec[] {
  if (ids === undefined || ids.length === 0) return TARGETS.filter((t) => !t.optional);
  return ids.map((id) => {
    const t = TARGETS.find((x) => x.id === id);
    if (t === undefined) throw new Error(`unknown target '${id}' (known: ${TARGETS.map((x) => x.id).join(', ')})`);
    return t;
  });
}
