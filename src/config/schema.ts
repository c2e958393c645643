// The shape of a tandem config file: every key, its type, range and default. This is
// the first of two layers (types and ranges here; names, references and cross-field
// rules in validate.ts). docs/configuration.md documents the same keys; keep them in
// step.

import { isMap } from 'yaml';
import { LOG_FORMATS, LOG_LEVELS } from '../log.ts';
import { edgeFields } from './edge-schema.ts';
import { MAX_DURATION_MS, formatDuration, parseDuration } from './duration.ts';
import { isHostName, parseCidr, parseHostPort, parseServerUrl, parseVipAddress } from './net.ts';
import type { HostPort } from './net.ts';
import {
  INVALID,
  bool,
  describeValue,
  dict,
  either,
  int,
  leafOf,
  list,
  oneOf,
  oneOrList,
  optional,
  parsed,
  reader,
  required,
  scalarText,
  str,
  struct,
  withDefault,
} from './reader.ts';
import type { Field, Reader, StructOf } from './reader.ts';

// ---- leaves specific to tandem -------------------------------------------------

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const NAME_RULE = 'a name of letters, digits, ".", "_" and "-", starting with a letter or digit, at most 64 long';

/** Names appear in metric labels and admin URLs, so they are kept to a safe alphabet. */
const name = str(NAME_RULE, (s) => (NAME.test(s) ? null : `"${s}" is not a valid name (must be ${NAME_RULE})`));

/** A reference to something named elsewhere; validate.ts checks that it exists. */
const ref = (what: string) => str(`the name of a ${what}`);

function duration(options: { min?: number; expects?: string } = {}): Reader<number> {
  const min = options.min ?? 0;
  const expects = options.expects ?? `a duration${min > 0 ? ` of at least ${formatDuration(min)}` : ''} such as 250ms, 2s or 1m30s`;
  return parsed(
    expects,
    (s) => {
      const ms = parseDuration(s);
      if (ms === null) return `"${s}" is not a duration (must be ${expects}; units ms, s, m, h)`;
      if (ms < min) return `must be at least ${formatDuration(min)} (got ${s})`;
      if (ms > MAX_DURATION_MS) return `is too long (must be at most 24d, got ${s})`;
      return { value: ms };
    },
    (source) => `needs a unit (write ${source}s or ${source}ms)`,
  );
}

const hostPort = (minPort = 0) => parsed<HostPort>(`host:port${minPort === 0 ? '' : ` with a port from ${minPort} to 65535`}`, (s) => parseHostPort(s, minPort));

const serverUrl = parsed('an http:// or https:// URL with host and port, e.g. http://10.0.0.21:8080', parseServerUrl);

const cidr = parsed('an IP address or CIDR block', parseCidr);

const filePath = str('a file path', (s) => (s.trim() === '' ? 'is empty (must be a file path)' : null));

const absolutePath = (what: string) =>
  str(`${what} starting with /`, (s) => (s.startsWith('/') ? null : `must start with / (got ${JSON.stringify(s)})`));

const HTTP_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

const method = str('an HTTP method such as GET', (s) => (HTTP_TOKEN.test(s) ? null : `"${s}" is not an HTTP method (must be a word such as GET or POST)`));

const headerName = str('an HTTP header name', (s) => (HTTP_TOKEN.test(s) ? null : `"${s}" is not a valid header name (must be a token such as x-canary)`));

const cookieName = str('a cookie name', (s) => (HTTP_TOKEN.test(s) ? null : `"${s}" is not a valid cookie name (letters, digits and !#$%&'*+.^_\`|~-)`));

/** Route host: an exact name or `*.example.com`; no port (the router ignores it). */
const hostPattern = str('a host name or *.domain pattern', (s) => {
  const valid = 'must be a host name such as api.example.com, or *.example.com, without a port';
  const host = s.startsWith('*.') ? s.slice(2) : s;
  if (s === '*') return `"*" matches every host; leave host out instead`;
  if (/:\d+$/.test(host)) return `must not contain a port (${valid}; got "${s}")`;
  if (!isHostName(host)) return `"${s}" is not a host name (${valid})`;
  return null;
});

/** A literal Host header value: a host name, optionally with a port. */
const hostHeader = str('preserve, backend, or a host name such as example.com', (s) => {
  if (s === 'preserve' || s === 'backend') return null;
  const host = s.replace(/:\d{1,5}$/, '');
  if (isHostName(host) || /^\[[0-9a-f:.]+\]$/i.test(host)) return null;
  return `"${s}" is not preserve, backend, or a host name (must be one of those, e.g. api.internal:8080)`;
});

/**
 * Linux's rules for an interface name, in the alphabet names really use, and no leading
 * "-" (ip, arping and ndsend would read it as an option). The name reaches the hook's
 * command lines, so "$(...)", ";" and quotes must never pass.
 */
const IFNAME = /^[A-Za-z0-9_.@:][A-Za-z0-9_.@:-]{0,14}$/;
const interfaceName = str('a network interface name such as eth0', (s) =>
  IFNAME.test(s) && s !== '.' && s !== '..'
    ? null
    : `"${s}" is not a network interface name (must be 1 to 15 of letters, digits, "_", ".", "@", ":" and "-", not starting with "-", and not "." or "..", e.g. eth0 or bond0.10)`,
);

const secret = str('a shared secret of at least 16 characters', (s) =>
  // Empty counts as "not set" (as `${VAR:-}` gives); validate.ts decides whether that is allowed.
  s === '' || s.length >= 16 ? null : `is too short: ${s.length} characters (must be at least 16)`,
);

/** One expected status: a code (`204`) or an inclusive range (`"200-399"`). */
const statusRange: Reader<readonly [number, number]> = reader('a status code such as 204 or a range such as "200-399"', (node, path, cx) => {
  const leaf = leafOf(node, path, cx);
  if (leaf === INVALID) return INVALID;
  const valid = 'must be a status code from 100 to 599 or a range such as "200-399"';
  const text = leaf === null ? null : String(leaf.value).trim();
  const m = text === null ? null : /^(\d{3})(?:\s*-\s*(\d{3}))?$/.exec(text);
  if (m === null) return cx.fail(node, path, `${valid} (got ${leaf === null ? 'a structure' : describeValue(leaf.value)})`);
  const low = Number(m[1]);
  const high = m[2] === undefined ? low : Number(m[2]);
  if (low < 100 || high > 599 || low > high) return cx.fail(node, path, `${valid} (got ${text})`);
  return [low, high] as const;
});

/** A reader that accepts nothing of its own and yields a fixed value (for `admin: false`). */
function constant<T>(value: T): Reader<T> {
  return reader('', () => value);
}

/** A key whose value is a mapping of its own; absent means all its defaults. */
function section<F extends Record<string, Field<unknown>>>(fields: F, expects?: string): Field<StructOf<F>> {
  const fallback = Object.fromEntries(Object.entries(fields).map(([key, field]) => [key, field.fallback]));
  return withDefault(struct(fields, expects), fallback as StructOf<F>);
}

// ---- sections ------------------------------------------------------------------

const edge = edgeFields({ headerName, absolutePath, cidr, filePath });

const listener = struct({
  name: required(name),
  address: required(hostPort()),
  ...edge.listener,
  timeouts: section({
    headers: withDefault(duration({ min: 1 }), 10_000),
    request: withDefault(duration({ expects: 'a duration such as 60s, or 0s to disable' }), 60_000),
    keepAlive: withDefault(duration({ min: 1 }), 5_000),
    send: withDefault(duration({ expects: 'a duration such as 30s, or 0s to disable' }), 30_000),
  }),
  maxHeaderSize: withDefault(int(1024, 1_048_576, 'a size in bytes from 1024 to 1048576'), 16_384),
  maxConnections: withDefault(int(0, 1_000_000, 'an integer from 0 (no limit) to 1000000'), 0),
}, 'a listener { name, address }');

const route = struct({
  name: required(name),
  listeners: withDefault(list(ref('listener'), { expects: 'a list of listener names' }), []),
  match: section({
    host: withDefault(oneOrList(hostPattern), []),
    pathPrefix: withDefault(absolutePath('a path'), '/'),
    methods: withDefault(list(method, { expects: 'a list of HTTP methods such as [GET, POST]' }), []),
    headers: withDefault(dict(scalarText('a header value'), { key: headerName, expects: 'a mapping of header names to values' }), new Map<string, string>()),
  }),
  pool: required(ref('pool')),
  ...edge.route,
  rateLimit: optional(struct({
    requests: required(int(1, 1_000_000, 'a number of requests from 1 to 1000000')),
    per: withDefault(duration({ min: 1 }), 1_000),
    burst: optional(int(1, 1_000_000, 'a number of requests from 1 to 1000000')),
    clients: withDefault(int(1, 10_000_000, 'a number of client addresses from 1 to 10000000'), 100_000),
  }, 'a mapping { requests, per, burst, clients }')),
}, 'a route { name, match, pool }');

const backend = struct({
  name: required(name),
  url: required(serverUrl),
  weight: withDefault(int(0, 1000), 1),
  backup: withDefault(bool(), false),
  maxConnections: withDefault(int(1, 65_536), 128),
}, 'a backend { name, url, weight }');

const healthCheck = struct({
  path: withDefault(absolutePath('a request path'), '/'),
  method: withDefault(oneOf(['GET', 'HEAD']), 'GET'),
  port: optional(int(1, 65_535, 'a port from 1 to 65535')),
  host: optional(str('a Host header value')),
  interval: withDefault(duration({ min: 1 }), 2_000),
  timeout: withDefault(duration({ min: 1 }), 1_000),
  rise: withDefault(int(1, 100), 2),
  fall: withDefault(int(1, 100), 3),
  expect: section({
    status: withDefault(oneOrList(statusRange), [[200, 399] as const]),
    body: optional(str('a text the body must contain')),
  }),
  startUnhealthy: withDefault(bool(), false),
}, 'a mapping { path, interval, timeout, rise, fall, ... }');

const outlier = struct({
  consecutiveFailures: withDefault(int(1, 1000), 5),
  on5xx: withDefault(bool(), false),
  ejectFor: withDefault(duration({ min: 1 }), 30_000),
  maxEjectFor: withDefault(duration({ min: 1 }), 300_000),
  maxEjectedPercent: withDefault(int(0, 100, 'a percentage from 0 to 100'), 50),
});

const pool = struct({
  balance: withDefault(oneOf(['weighted-round-robin', 'least-connections']), 'weighted-round-robin'),
  backends: required(list(backend, { min: 1, expects: 'a list of backends { name, url, weight }' })),
  hostHeader: withDefault(hostHeader, 'preserve'),
  healthCheck: optional(healthCheck),
  outlier: optional(outlier),
  timeouts: section({
    connect: withDefault(duration({ min: 1 }), 2_000),
    response: withDefault(duration({ min: 1 }), 30_000),
    idle: withDefault(duration({ min: 1 }), 60_000),
  }),
  queue: section({
    size: withDefault(int(0, 1_000_000, 'a number of requests from 0 (no queue) to 1000000'), 1024),
    timeout: withDefault(duration({ min: 1 }), 5_000),
  }),
  retries: withDefault(int(0, 10), 1),
  retryBudget: withDefault(int(0, 100, 'a percentage from 0 to 100'), 20),
  slowStart: withDefault(duration(), 0),
  panic: withDefault(bool(), false),
  sticky: optional(struct({ cookie: withDefault(cookieName, 'TANDEM_STICKY'), ttl: withDefault(duration({ min: 1000 }), 3_600_000) })),
  debugHeaders: withDefault(bool(), false),
  ...edge.pool,
}, 'a pool { backends, balance, healthCheck, ... }');

const adminFields = {
  address: withDefault(hostPort(), { host: '127.0.0.1', port: 9901 }),
  token: optional(str('a bearer token')),
  authReads: withDefault(bool(), false),
};
const adminDefault = section(adminFields);
const adminStruct = adminDefault.read as Reader<StructOf<typeof adminFields>>;
const admin = either<StructOf<typeof adminFields> | null>('false, or a mapping { address, token, authReads }', (node, leaf) => {
  if (isMap(node)) return adminStruct;
  if (leaf === false) return constant(null);
  if (leaf === true) return constant(adminDefault.fallback as StructOf<typeof adminFields>);
  return null;
});

const accessLog = either<{ path: string } | null>('false, or a mapping { path: stdout or a file path }', (node, leaf) => {
  if (isMap(node)) return struct({ path: withDefault(filePath, 'stdout') }) as Reader<{ path: string }>;
  if (leaf === false) return constant(null);
  return null;
});

const logSettings = section({
  level: withDefault(oneOf(LOG_LEVELS), 'info'),
  format: withDefault(oneOf(LOG_FORMATS), 'auto'),
}, 'a mapping { level, format }');

const preemptStruct = struct({ delay: withDefault(duration(), 0) });
const preempt = either<{ enabled: boolean; delay: number }>('true, false, or a mapping { delay }', (node, leaf) => {
  if (isMap(node)) {
    return reader('a mapping { delay }', (n, path, cx) => {
      const value = preemptStruct(n, path, cx);
      return value === INVALID ? INVALID : { enabled: true, delay: value.delay };
    });
  }
  if (typeof leaf === 'boolean') return constant({ enabled: leaf, delay: 0 });
  return null;
});

const vip = struct({
  name: required(name),
  address: required(parsed('an IP address with a prefix length, e.g. 10.0.0.100/24', parseVipAddress)),
  interface: required(interfaceName),
  priority: optional(dict(int(1, 255, 'a priority from 1 to 255'), { key: ref('node'), min: 1, expects: 'a mapping of node ids to priorities' })),
  preempt: withDefault(preempt, { enabled: true, delay: 0 }),
  pools: withDefault(list(ref('pool'), { expects: 'a list of pool names' }), []),
}, 'a VIP { name, address, interface, priority }');

const LINK_LOCAL_GROUP = /^224\.0\.0\.(25[0-5]|2[0-4]\d|1?\d?\d)$/;
const multicastGroup = either<string | null>('an IPv4 link-local multicast group (224.0.0.0 to 224.0.0.255), or false', (_node, leaf) => {
  if (leaf === false || leaf === 'off') return constant(null);
  return str('an IPv4 link-local multicast group such as 224.0.0.18, or false', (s) =>
    LINK_LOCAL_GROUP.test(s) ? null : `"${s}" is not a link-local multicast group (224.0.0.0 to 224.0.0.255; adverts must not leave the link)`,
  );
});

const ha = struct({
  store: withDefault(oneOf(['peer', 'etcd']), 'peer'),
  etcd: optional(
    struct({
      endpoints: required(list(serverUrl, { min: 1, expects: 'a list of etcd URLs such as http://127.0.0.1:2379' })),
      prefix: withDefault(absolutePath('a key prefix'), '/tandem'),
      tls: optional(struct({ ca: optional(filePath), cert: optional(filePath), key: optional(filePath) }, 'a mapping { ca, cert, key } of PEM files')),
      auth: optional(struct({ user: required(str('an etcd user name')), password: required(str('a password')) }, 'a mapping { user, password }')),
    }, 'a mapping { endpoints, prefix, tls, auth }'),
  ),
  nodes: required(dict(struct({ address: required(hostPort(1)) }), { key: name, min: 1, expects: 'a mapping of node ids to { address: host:port }' })),
  secret: optional(secret),
  multicast: withDefault(multicastGroup, '224.0.0.18' as string | null),
  lease: section({
    duration: withDefault(duration({ min: 1 }), 1_000),
    renewEvery: withDefault(duration({ min: 1 }), 200),
  }),
  hook: optional(filePath),
  agent: withDefault(bool(), false),
  hookTimeout: withDefault(duration({ min: 1 }), 5_000),
  garp: section({
    count: withDefault(int(0, 100), 3),
    interval: withDefault(duration(), 200),
    refresh: withDefault(duration({ expects: 'a duration such as 60s, or 0s to disable' }), 60_000),
  }),
  vips: required(list(vip, { min: 1, expects: 'a list of VIPs { name, address, interface, priority }' })),
});

const workers = either<number | 'auto'>('an integer of at least 1, or auto', (_node, leaf) => {
  if (leaf === 'auto') return constant('auto' as const);
  if (leaf === undefined) return null;
  return int(1, 1024, 'an integer from 1 to 1024, or auto');
});

/** The whole file. */
export const configSchema = struct(
  {
    workers: withDefault(workers, 'auto' as const),
    shutdownTimeout: withDefault(duration(), 30_000),
    log: logSettings,
    trustedProxies: withDefault(list(cidr, { expects: 'a list of IP addresses or CIDR blocks' }), []),
    accessLog: optional(accessLog),
    listeners: required(list(listener, { min: 1, expects: 'a list of listeners { name, address }' })),
    routes: required(list(route, { min: 1, expects: 'a list of routes { name, match, pool }' })),
    pools: required(dict(pool, { key: name, min: 1, expects: 'a mapping of pool names to pools' })),
    admin: withDefault(admin, adminDefault.fallback as StructOf<typeof adminFields>),
    ha: optional(ha),
  },
  'a mapping with listeners, routes and pools',
);

type Read<R> = R extends Reader<infer T> ? T : never;

/** The file as read by the schema: typed, defaults filled, not yet cross-checked. */
export type RawConfig = Read<typeof configSchema>;
export type RawListener = Read<typeof listener>;
export type RawRoute = Read<typeof route>;
export type RawPool = Read<typeof pool>;
export type RawBackend = Read<typeof backend>;
export type RawHa = Read<typeof ha>;
export type RawVip = Read<typeof vip>;
