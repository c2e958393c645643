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
// Host names are looked up by a hash computed over the Host header's characters in
// place, lower-casing as it goes: no substring for the port, no lower-cased copy, so a
// match allocates nothing. The hash runs from the end of the name towards the start so
// that, on the way, it passes through the hash of every `.suffix`, which is how
// wildcards are found in one pass without trying each pattern.

const FNV_OFFSET = 0x811c9dc5 | 0;
const FNV_PRIME = 0x01000193;
// Map keys are kept to 30 bits so they are small integers on every V8 build: a key
// outside that range would be boxed, an allocation per lookup.
const KEY_MASK = 0x3fffffff;

const DOT = 46;
const COLON = 58;
const OPEN_BRACKET = 91;
const CLOSE_BRACKET = 93;

/** The hash the router files `name` under (lower-cased, from the last character to the first). Exported for tests. */
export function hostHash(name: string): number {
  return hashRange(name, 0, name.length);
}

function hashRange(s: string, start: number, end: number): number {
  let h = FNV_OFFSET;
  for (let i = end - 1; i >= start; i--) h = Math.imul(h ^ lowerCode(s.charCodeAt(i)), FNV_PRIME);
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

/** A route's conditions other than the host, laid out for a quick check. */
class CompiledRoute {
  readonly index: number;
  readonly route: RouteConfig;
  readonly pathPrefix: string;
  /** A prefix with `?` can never match the path before the query. */
  readonly never: boolean;
  readonly methods: readonly string[];
  readonly headerNames: readonly string[];
  readonly headerValues: readonly string[];

  constructor(route: RouteConfig, index: number) {
    this.index = index;
    this.route = route;
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
  readonly exact: Map<number, HostEntry>;
  readonly suffixes: Map<number, HostEntry>;
  readonly anyHost: readonly CompiledRoute[];
  /** Some route here names a host: the Host header must be read. */
  readonly byHost: boolean;

  constructor(routes: readonly CompiledRoute[]) {
    const hostless = (r: CompiledRoute) => r.route.match.hosts.length === 0 && r.route.match.hostSuffixes.length === 0;
    const names = new Set<string>();
    const suffixes = new Set<string>();
    for (const r of routes) {
      for (const h of r.route.match.hosts) names.add(normalizeName(h));
      for (const s of r.route.match.hostSuffixes) suffixes.add(normalizeSuffix(s));
    }
    this.exact = new Map();
    for (const name of names) {
      const candidates = routes.filter((r) => hostless(r) || coversName(r, name));
      file(this.exact, new HostEntry(name, candidates));
    }
    this.suffixes = new Map();
    for (const suffix of suffixes) {
      const candidates = routes.filter((r) => hostless(r) || r.route.match.hostSuffixes.some((s) => normalizeSuffix(s) === suffix));
      file(this.suffixes, new HostEntry(suffix, candidates));
    }
    this.anyHost = routes.filter(hostless);
    this.byHost = names.size + suffixes.size > 0;
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
 * `a.example.com` and `a.b.example.com` but not `example.com`.
 */
export class Router {
  private readonly tables: readonly ListenerTable[];

  constructor(routes: readonly RouteConfig[], listeners: readonly string[]) {
    const compiled = routes.map((r, i) => new CompiledRoute(r, i));
    this.tables = listeners.map((name) => new ListenerTable(
      compiled.filter((r) => r.route.listeners.length === 0 || r.route.listeners.includes(name)),
    ));
  }

  /** The first route that matches this request on the listener at `listenerIndex`, or null. */
  match(
    listenerIndex: number, host: string | undefined, path: string, method: string, headers: IncomingHttpHeaders,
  ): RouteConfig | null {
    const table = this.tables[listenerIndex];
    if (table === undefined) return null;
    if (!table.byHost || host === undefined || host.length === 0) {
      return firstMatch(table.anyHost, Infinity, path, method, headers)?.route ?? null;
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
      if (end === -1) end = host.length;
      if (end > 0 && host.charCodeAt(end - 1) === DOT) end--;
    }
    if (end <= start) return firstMatch(table.anyHost, Infinity, path, method, headers)?.route ?? null;

    for (let e = table.exact.get(hashRange(host, start, end)); e !== undefined; e = e.next) {
      if (equalsLower(host, start, end, e.name)) return firstMatch(e.routes, Infinity, path, method, headers)?.route ?? null;
    }
    if (bracketed || table.suffixes.size === 0) {
      return firstMatch(table.anyHost, Infinity, path, method, headers)?.route ?? null;
    }

    // Not a known name: try every `.suffix` of it, nearest the end first. Each suffix
    // entry lists its routes and the any-host ones, so with several wildcards covering
    // the name the answer is the earliest first match among their lists.
    let best: CompiledRoute | null = null;
    let covered = false;
    let h = FNV_OFFSET;
    for (let i = end - 1; i > start; i--) {
      const c = host.charCodeAt(i);
      h = Math.imul(h ^ lowerCode(c), FNV_PRIME);
      if (c !== DOT) continue;
      for (let e = table.suffixes.get(h & KEY_MASK); e !== undefined; e = e.next) {
        if (!equalsLower(host, i, end, e.name)) continue;
        covered = true;
        const r = firstMatch(e.routes, best === null ? Infinity : best.index, path, method, headers);
        if (r !== null) best = r;
      }
    }
    if (!covered) return firstMatch(table.anyHost, Infinity, path, method, headers)?.route ?? null;
    return best === null ? null : best.route;
  }
}
