import type { IncomingHttpHeaders } from 'node:http';
import type { RouteConfig } from '../config/types.ts';

// Route matching runs on every request. The routes are compiled once per config into,
// for each listener:
//   - a table of exact host names, each entry holding the complete candidate list for
//     that host (its own routes, the wildcard routes that cover it and the routes for
//     any host, in config order), so a known host costs one lookup and a short walk
//     however many routes other hosts have;
//   - a table of wildcard suffixes (`*.example.com` → `.example.com`) for hosts not in
//     the first table, each entry likewise holding its routes plus the any-host ones;
//   - the any-host routes alone.
// A Host header that is exactly a configured name (lower case, no port: what browsers
// send on 80/443) is found by a string-keyed Map, hashed natively by V8. Anything else
// (a port, upper case, a trailing dot, IPv6 brackets, an unknown name) is looked up by
// a hash computed over the header's characters in place, lower-casing as it goes: no
// substring for the port, no lower-cased copy, so no match allocates. That hash runs
// from the end of the name towards the start so that, on the way, it passes through
// the hash of every `.suffix`, which is how wildcards are found in the same pass
// without trying each pattern. bench/micro/route.ts measures both paths.

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
// Map keys are kept to 30 bits so they are small integers on every V8 build: a key
// outside that range would be boxed, an allocation per lookup.
const KEY_MASK = 0x3fffffff;

const DOT = 46;
const COLON = 58;
const OPEN_BRACKET = 91;

/** The hash the router files `name` under (lower-cased, from the last character to the first). Exported for tests. */
export function hostHash(name: string): number {
  let h = FNV_OFFSET;
  for (let i = name.length - 1; i >= 0; i--) h = Math.imul(h ^ lowerCode(name.charCodeAt(i)), FNV_PRIME);
  return h & KEY_MASK;
}

function lowerCode(c: number): number {
  return c >= 65 && c <= 90 ? c + 32 : c;
}

/** s[start, end) equals `lower` (already lower case), ignoring ASCII case in s. */
function equalsLower(s: string, start: number, end: number, lower: string): boolean {
  if (end - start !== lower.length) return false;
  for (let i = start, j = 0; i < end; i++, j++) {
    if (lowerCode(s.charCodeAt(i)) !== lower.charCodeAt(j)) return false;
  }
  return true;
}

/** s[start, end) is `lower` ignoring ASCII case; the native comparison first, as names are mostly sent in lower case. */
function sameName(s: string, start: number, end: number, lower: string): boolean {
  if (end - start !== lower.length) return false;
  return s.startsWith(lower, start) || equalsLower(s, start, end, lower);
}

/** A route's conditions other than the host, laid out for a quick check. */
class CompiledRoute {
  readonly index: number;
  readonly route: RouteConfig;
  /** What match() returns for this route. */
  readonly target: unknown;
  readonly pathPrefix: string;
  /** A prefix with `?` can never match the path before the query. */
  readonly never: boolean;
  readonly methods: readonly string[];
  readonly headerNames: readonly string[];
  readonly headerValues: readonly string[];

  constructor(route: RouteConfig, index: number, target: unknown) {
    this.index = index;
    this.route = route;
    this.target = target;
    this.pathPrefix = route.match.pathPrefix;
    this.never = route.match.pathPrefix.includes('?');
    this.methods = route.match.methods;
    this.headerNames = route.match.headers.map(([name]) => name.toLowerCase());
    this.headerValues = route.match.headers.map(([, value]) => value);
  }

  matches(path: string, method: string, headers: IncomingHttpHeaders): boolean {
    // The prefix holds no `?`, so a prefix test on the whole request target is the
    // same as one on the path before the query, without cutting the query off.
    if (this.never || !path.startsWith(this.pathPrefix)) return false;
    const methods = this.methods;
    if (methods.length !== 0) {
      let found = false;
      for (let i = 0; i < methods.length; i++) {
        if (methods[i] === method) {
          found = true;
          break;
        }
      }
      if (!found) return false;
    }
    const names = this.headerNames;
    for (let i = 0; i < names.length; i++) {
      const value = headers[names[i]];
      if (value === undefined) return false;
      if (typeof value === 'string') {
        if (value !== this.headerValues[i]) return false;
      } else if (!value.includes(this.headerValues[i])) {
        return false;
      }
    }
    return true;
  }
}

/** Routes filed under one host name or suffix; `next` chains names whose hashes collide. */
class HostEntry {
  readonly name: string;
  readonly routes: readonly CompiledRoute[];
  next: HostEntry | undefined;

  constructor(name: string, routes: readonly CompiledRoute[]) {
    this.name = name;
    this.routes = routes;
    this.next = undefined;
  }
}

/** Everything one listener matches against. */
class ListenerTable {
  /** Exact names by themselves, for Host headers that are already a bare lower-case name. */
  readonly names: Map<string, HostEntry>;
  /** Exact names by hostHash, for the rest (ports, upper case, trailing dots, brackets). */
  readonly exact: Map<number, HostEntry>;
  readonly suffixes: Map<number, HostEntry>;
  readonly anyHost: readonly CompiledRoute[];
  /** Some route here names a host: the Host header must be read. */
  readonly byHost: boolean;
  /** Dots in the longest wildcard suffix: deeper suffixes of a name need no lookup. */
  readonly suffixDepth: number;

  constructor(routes: readonly CompiledRoute[]) {
    const hostless = (r: CompiledRoute) => r.route.match.hosts.length === 0 && r.route.match.hostSuffixes.length === 0;
    const names = new Set<string>();
    const suffixes = new Set<string>();
    for (const r of routes) {
      for (const h of r.route.match.hosts) names.add(normalizeName(h));
      for (const s of r.route.match.hostSuffixes) suffixes.add(normalizeSuffix(s));
    }
    this.names = new Map();
    this.exact = new Map();
    for (const name of names) {
      const entry = new HostEntry(name, routes.filter((r) => hostless(r) || coversName(r, name)));
      this.names.set(name, entry);
      file(this.exact, entry);
    }
    this.suffixes = new Map();
    for (const suffix of suffixes) {
      const candidates = routes.filter((r) => hostless(r) || r.route.match.hostSuffixes.some((s) => normalizeSuffix(s) === suffix));
      file(this.suffixes, new HostEntry(suffix, candidates));
    }
    this.anyHost = routes.filter(hostless);
    this.byHost = names.size + suffixes.size > 0;
    this.suffixDepth = Math.max(0, ...[...suffixes].map((x) => x.split('.').length - 1));
  }
}

function file(table: Map<number, HostEntry>, entry: HostEntry): void {
  const key = hostHash(entry.name);
  const head = table.get(key);
  if (head === undefined) {
    table.set(key, entry);
    return;
  }
  let last = head;
  while (last.next !== undefined) last = last.next;
  last.next = entry;
}

/** Lower case, without IPv6 brackets or a trailing dot: the form Host headers are compared in. */
function normalizeName(host: string): string {
  let h = host.toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

/** `.example.com`, also when given as `*.example.com` or `example.com`. */
function normalizeSuffix(suffix: string): string {
  const s = suffix.toLowerCase().replace(/^\*/, '');
  return s.startsWith('.') ? s : `.${s}`;
}

function coversName(r: CompiledRoute, name: string): boolean {
  const m = r.route.match;
  if (m.hosts.some((h) => normalizeName(h) === name)) return true;
  return m.hostSuffixes.some((s) => {
    const suffix = normalizeSuffix(s);
    return name.length > suffix.length && name.endsWith(suffix);
  });
}

/** First route of `routes` (sorted by index) below `limit` that matches. */
function firstMatch(
  routes: readonly CompiledRoute[], limit: number, path: string, method: string, headers: IncomingHttpHeaders,
): CompiledRoute | null {
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i];
    if (r.index >= limit) return null;
    if (r.matches(path, method, headers)) return r;
  }
  return null;
}

/**
 * The compiled route table of one config: first match wins, in config order. Host
 * names compare case-insensitively and without the port; `*.example.com` covers
 * `a.example.com` and `a.b.example.com` but not `example.com`. match() returns the
 * target given for the route (the data plane's runtime route), or the RouteConfig.
 */
export class Router<T = RouteConfig> {
  private readonly tables: readonly ListenerTable[];
  // Scratch for match(): where the name's dots are and the hash of the suffix at each.
  // Reused by every call (match is synchronous), so finding suffixes allocates nothing.
  private readonly dotAt: Int32Array;
  private readonly dotHash: Int32Array;

  /** `targets`, indexed like `routes`, are what match() returns; default the routes themselves. */
  constructor(routes: readonly RouteConfig[], listeners: readonly string[], targets: readonly T[] = routes as readonly unknown[] as readonly T[]) {
    const compiled = routes.map((r, i) => new CompiledRoute(r, i, targets[i]));
    this.tables = listeners.map((name) => new ListenerTable(
      compiled.filter((r) => r.route.listeners.length === 0 || r.route.listeners.includes(name)),
    ));
    const depth = Math.max(0, ...this.tables.map((t) => t.suffixDepth));
    this.dotAt = new Int32Array(depth);
    this.dotHash = new Int32Array(depth);
  }

  /** The first route that matches this request on the listener at `listenerIndex`, or null. */
  match(
    listenerIndex: number, host: string | undefined, path: string, method: string, headers: IncomingHttpHeaders,
  ): T | null {
    const table = this.tables[listenerIndex];
    if (table === undefined) return null;
    if (!table.byHost || host === undefined || host.length === 0) {
      return firstMatch(table.anyHost, Infinity, path, method, headers)?.target as T ?? null;
    }

    // The name's bounds inside the header: `[v6]:port`, `name:port`, `name.`.
    let start = 0;
    let end: number;
    const bracketed = host.charCodeAt(0) === OPEN_BRACKET;
    if (bracketed) {
      start = 1;
      end = host.indexOf(']');
      if (end === -1 || (end + 1 < host.length && host.charCodeAt(end + 1) !== COLON)) end = start;
    } else {
      end = host.indexOf(':');
      if (end === -1) {
        // The usual header from a browser on port 80/443 is the bare lower-case name:
        // V8 hashes and compares it natively, about twice as fast as the loop below.
        const known = table.names.get(host);
        if (known !== undefined) return firstMatch(known.routes, Infinity, path, method, headers)?.target as T ?? null;
        end = host.length;
      }
      if (end > 0 && host.charCodeAt(end - 1) === DOT) end--;
    }
    if (end <= start) return firstMatch(table.anyHost, Infinity, path, method, headers)?.target as T ?? null;

    // One pass from the end of the name: the hash of the whole name and, on the way,
    // the hash of each `.suffix` no deeper than the deepest configured wildcard.
    const depth = bracketed ? 0 : table.suffixDepth;
    const dotAt = this.dotAt;
    const dotHash = this.dotHash;
    let dots = 0;
    let h = FNV_OFFSET;
    for (let i = end - 1; i >= start; i--) {
      const c = host.charCodeAt(i);
      h = Math.imul(h ^ lowerCode(c), FNV_PRIME);
      if (c === DOT && dots < depth && i > start) {
        dotAt[dots] = i;
        dotHash[dots] = h & KEY_MASK;
        dots++;
      }
    }
    for (let e = table.exact.get(h & KEY_MASK); e !== undefined; e = e.next) {
      if (sameName(host, start, end, e.name)) return firstMatch(e.routes, Infinity, path, method, headers)?.target as T ?? null;
    }

    // Not a known name: try its suffixes. Each suffix entry lists its routes and the
    // any-host ones, so with several wildcards covering the name the answer is the
    // earliest first match among their lists.
    let best: CompiledRoute | null = null;
    let covered = false;
    for (let k = 0; k < dots; k++) {
      const at = dotAt[k];
      for (let e = table.suffixes.get(dotHash[k]); e !== undefined; e = e.next) {
        if (!sameName(host, at, end, e.name)) continue;
        covered = true;
        const r = firstMatch(e.routes, best === null ? Infinity : best.index, path, method, headers);
        if (r !== null) best = r;
      }
    }
    if (!covered) return firstMatch(table.anyHost, Infinity, path, method, headers)?.target as T ?? null;
    return best === null ? null : best.target as T;
  }
}
