// The compiled, frozen runtime form of a tandem config. Everything outside src/config
// reads these types only; raw YAML never leaves the loader. Durations are milliseconds.

import type { LogConfig } from '../log.ts';

/** A listener: one bound address that accepts client connections. */
export interface ListenerConfig {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly tls: ListenerTlsConfig | null;
  /** HTTP/2 to clients: by ALPN on TLS listeners, with prior knowledge (h2c) on plain ones. */
  readonly http2?: boolean;
  /** Sources whose connections open with a PROXY header (v1 or v2); null: none. */
  readonly proxyProtocol?: { readonly from: readonly string[] } | null;
  /**
   * What serves its HTTP/1.1 connections: `fast`, tandem's engine on node:net and llhttp
   * (src/engine/), or `node`, node:http with undici upstream.
   */
  readonly engine: 'fast' | 'node';
  /** Time to receive the complete request head (node:http headersTimeout). */
  readonly headersTimeout: number;
  /** Time to receive the complete request, body included (node:http requestTimeout); 0 disables. */
  readonly requestTimeout: number;
  /** Idle time of a client keep-alive connection between requests. */
  readonly keepAliveTimeout: number;
  /** Largest request head accepted, in bytes (431 above it). */
  readonly maxHeaderSize: number;
  /** A response the client stops reading is cut after this long without progress; 0 disables. */
  readonly sendTimeout: number;
  /** Client connections open at once, at most (per worker process: the config's value divided among workers); 0: no limit. */
  readonly maxConnections: number;
}

/** What a route matches on; every present field must match. */
export interface RouteMatch {
  /** Exact host names (lower case, no port). Empty: any host. */
  readonly hosts: readonly string[];
  /** Suffixes from `*.example.com` patterns, stored as `.example.com`. */
  readonly hostSuffixes: readonly string[];
  readonly pathPrefix: string;
  /** Upper-case methods; empty: any method. */
  readonly methods: readonly string[];
  /** Lower-case header name and exact value pairs. */
  readonly headers: readonly (readonly [string, string])[];
}

export interface RouteConfig {
  readonly name: string;
  /** Listener names this route applies to; empty: all listeners. */
  readonly listeners: readonly string[];
  readonly match: RouteMatch;
  readonly pool: string;
  /** Answered by tandem with a redirect; the pool is not asked. */
  readonly redirect?: RedirectConfig | null;
  readonly rewrite?: RewriteConfig | null;
  readonly headers?: HeaderRulesConfig | null;
  /** Client address blocks allowed on this route (403 for the rest); null: everyone. */
  readonly allow?: readonly string[] | null;
  /** Compress responses of these media types for clients that accept gzip or br; null: never. */
  readonly compress?: CompressConfig | null;
  readonly rateLimit: RateLimitConfig | null;
}

export interface CompressConfig {
  /** Lower-case `type/subtype` or `type/*`. */
  readonly types: readonly string[];
  /** Bodies with a smaller Content-Length are sent as they are; bodies of unknown length are compressed. */
  readonly minSize: number;
}

export interface CertificateConfig {
  readonly cert: string;
  readonly key: string;
}

export interface ListenerTlsConfig {
  /** The first is the default, served when SNI names none of them. */
  readonly certificates: readonly CertificateConfig[];
  readonly cert: string;
  readonly key: string;
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
  readonly ciphers: string | null;
  /** CA bundle client certificates must chain to; null: none asked for. */
  readonly clientCa: string | null;
}

export interface RedirectConfig {
  readonly scheme: 'http' | 'https' | null;
  readonly host: string | null;
  readonly port: number | null;
  readonly path: string | null;
  readonly code: number;
}

export interface RewriteConfig {
  readonly stripPrefix: string | null;
  readonly addPrefix: string | null;
}

export interface HeaderEditConfig {
  /** Lower-case name and value pairs. */
  readonly set: readonly (readonly [string, string])[];
  /** Lower-case names. */
  readonly remove: readonly string[];
}

export interface HeaderRulesConfig {
  readonly request: HeaderEditConfig;
  readonly response: HeaderEditConfig;
}

/** TLS towards a pool's backends (those with https:// URLs). */
export interface UpstreamTlsConfig {
  readonly ca: string | null;
  readonly servername: string | null;
  readonly verify: boolean;
  readonly cert: string | null;
  readonly key: string | null;
}

/** A token bucket per client address: `requests` per `per` ms, up to `burst` at once. */
export interface RateLimitConfig {
  readonly requests: number;
  readonly per: number;
  readonly burst: number;
  /** Client addresses tracked at most; the least recently seen is forgotten first. */
  readonly clients: number;
}

export interface BackendConfig {
  readonly name: string;
  /** Origin as undici wants it, e.g. `http://127.0.0.1:8080`. */
  readonly origin: string;
  readonly protocol: 'http:' | 'https:';
  /** Host name or IP; IPv6 without brackets (`::1`), as in every `host` of this file. */
  readonly host: string;
  readonly port: number;
  readonly weight: number;
  readonly backup: boolean;
  /** Connections to this backend at most (undici Pool `connections`), and so requests in flight to it. */
  readonly maxConnections: number;
}

export interface HealthCheckConfig {
  readonly path: string;
  readonly method: 'GET' | 'HEAD';
  /** Port to check instead of the backend's own; null: the backend's port. */
  readonly port: number | null;
  /** Host header to send; null: the backend's host:port. */
  readonly host: string | null;
  readonly interval: number;
  readonly timeout: number;
  readonly rise: number;
  readonly fall: number;
  /** Inclusive status ranges that count as success, default [[200, 399]]. */
  readonly expectStatus: readonly (readonly [number, number])[];
  /** Substring the body must contain; null: not checked. */
  readonly expectBody: string | null;
  readonly startUnhealthy: boolean;
}

export interface OutlierConfig {
  /** Consecutive failed proxied requests that eject a backend. */
  readonly consecutiveFailures: number;
  /** Count 5xx answers of the backend as failures too. */
  readonly on5xx: boolean;
  readonly ejectFor: number;
  readonly maxEjectFor: number;
  readonly maxEjectedPercent: number;
}

export interface StickyConfig {
  readonly cookie: string;
  readonly ttl: number;
}

export interface PoolConfig {
  readonly name: string;
  readonly balance: 'weighted-round-robin' | 'least-connections';
  readonly backends: readonly BackendConfig[];
  /** `preserve`: pass the client's Host; `backend`: the backend's host:port; else this literal value. */
  readonly hostHeader: string;
  readonly healthCheck: HealthCheckConfig | null;
  readonly outlier: OutlierConfig | null;
  readonly connectTimeout: number;
  /** Time to the first byte of response headers. */
  readonly responseTimeout: number;
  /** Idle time of an upstream keep-alive connection and between body chunks. */
  readonly idleTimeout: number;
  /** Requests that wait for a backend with room when every one is at maxConnections; 0: none wait. */
  readonly queueSize: number;
  /** Longest wait in that queue before a 503. */
  readonly queueTimeout: number;
  readonly retries: number;
  /** Retries may be at most this percentage of active requests of the pool. */
  readonly retryBudgetPercent: number;
  readonly slowStart: number;
  readonly panic: boolean;
  readonly sticky: StickyConfig | null;
  /** Adds `x-tandem-backend` to responses. */
  readonly debugHeaders: boolean;
  readonly tls?: UpstreamTlsConfig | null;
  /** Open every backend connection with a PROXY protocol header of this version; null: none. */
  readonly proxyProtocol?: 'v1' | 'v2' | null;
}

export interface AdminConfig {
  readonly host: string;
  readonly port: number;
  readonly token: string | null;
  /** Reads need the token too. */
  readonly authReads: boolean;
}

export interface HaNodeConfig {
  readonly id: string;
  readonly host: string;
  readonly port: number;
}

export interface VipConfig {
  readonly name: string;
  /** `10.0.0.100/24` as written. */
  readonly address: string;
  readonly interface: string;
  /** Priority by node id; a node missing here has priority 0 and never holds the VIP. */
  readonly priority: Readonly<Record<string, number>>;
  readonly preempt: boolean;
  readonly preemptDelay: number;
  /** Pools whose availability this VIP needs; empty: every pool routed from any listener. */
  readonly pools: readonly string[];
}

export interface EtcdStoreConfig {
  /** Origins such as http://10.0.0.21:2379, tried in order. */
  readonly endpoints: readonly string[];
  readonly prefix: string;
  /** Absolute paths of PEM files; null: plain HTTP, or HTTPS checked against the system CAs. */
  readonly tls: { readonly ca: string | null; readonly cert: string | null; readonly key: string | null } | null;
  readonly auth: { readonly user: string; readonly password: string } | null;
}

export interface HaConfig {
  readonly store: 'peer' | 'etcd';
  readonly etcd: EtcdStoreConfig | null;
  readonly nodes: readonly HaNodeConfig[];
  readonly secret: string | null;
  /** Link-local multicast group that also carries the peer store's adverts; null: unicast only. */
  readonly multicastGroup: string | null;
  readonly leaseDuration: number;
  readonly renewEvery: number;
  /** Hook executable; null: log-only, or run by the vip-agent sidecar when `agent`. */
  readonly hook: string | null;
  /** A `tandem vip-agent` sidecar moves the VIPs; a MASTER run waits for its report. */
  readonly agent: boolean;
  readonly hookTimeout: number;
  /** Gratuitous ARP repeat count and interval passed to the hook, and the refresh period while holding. */
  readonly garpCount: number;
  readonly garpInterval: number;
  readonly garpRefresh: number;
  readonly vips: readonly VipConfig[];
}

export interface AccessLogConfig {
  /** `stdout` or a file path. */
  readonly path: string;
}

export interface Config {
  /** Absolute path of the file this came from. */
  readonly file: string;
  readonly workers: number;
  readonly shutdownTimeout: number;
  /** The operators' log on stderr (src/log.ts); not the access log. */
  readonly log: LogConfig;
  /** CIDR blocks whose X-Forwarded-For is kept. */
  readonly trustedProxies: readonly string[];
  readonly accessLog: AccessLogConfig | null;
  readonly listeners: readonly ListenerConfig[];
  readonly routes: readonly RouteConfig[];
  readonly pools: ReadonlyMap<string, PoolConfig>;
  readonly admin: AdminConfig | null;
  readonly ha: HaConfig | null;
}
