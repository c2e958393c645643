import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { describe, test } from 'node:test';
import type { RouteConfig } from '../../src/config/types.ts';
import { Router, hostHash } from '../../src/dataplane/router.ts';

interface RouteSpec {
  hosts?: string[];
  suffixes?: string[];
  pathPrefix?: string;
  methods?: string[];
  headers?: [string, string][];
  listeners?: string[];
}

function route(name: string, spec: RouteSpec = {}): RouteConfig {
  return {
    name,
    listeners: spec.listeners ?? [],
    match: {
      hosts: spec.hosts ?? [],
      hostSuffixes: spec.suffixes ?? [],
      pathPrefix: spec.pathPrefix ?? '/',
      methods: spec.methods ?? [],
      headers: spec.headers ?? [],
    },
    pool: `pool-${name}`,
    rateLimit: null,
  };
}

const LISTENERS = ['web', 'admin'];

/** Name of the route matched on listener `web` (or the one given), or null. */
function matcher(routes: RouteConfig[], listeners = LISTENERS) {
  const router = new Router(routes, listeners);
  return (host: string | undefined, path = '/', method = 'GET', headers: IncomingHttpHeaders = {}, listener = 0) =>
    router.match(listener, host, path, method, headers)?.name ?? null;
}

describe('router', () => {
  test('takes the first matching route in config order', () => {
    const m = matcher([
      route('api-v1', { pathPrefix: '/api/v1' }),
      route('api', { pathPrefix: '/api' }),
      route('shadowed', { pathPrefix: '/api/v1/users' }),
      route('rest', { pathPrefix: '/' }),
    ]);
    assert.equal(m('x', '/api/v1/users'), 'api-v1');
    assert.equal(m('x', '/api/v2'), 'api');
    assert.equal(m('x', '/other'), 'rest');
  });

  test('returns null when nothing matches', () => {
    const m = matcher([route('api', { hosts: ['api.example.com'], pathPrefix: '/api' })]);
    assert.equal(m('api.example.com', '/web'), null);
    assert.equal(m('web.example.com', '/api'), null);
    assert.equal(m(undefined, '/api'), null);
    assert.equal(matcher([])('api.example.com'), null);
  });

  test('compares host names without regard to case', () => {
    const m = matcher([route('api', { hosts: ['api.example.com'] }), route('wild', { suffixes: ['.test'] })]);
    assert.equal(m('API.Example.COM'), 'api');
    assert.equal(m('api.example.com'), 'api');
    assert.equal(m('Foo.TEST'), 'wild');
  });

  test('ignores the port in the Host header', () => {
    const m = matcher([route('api', { hosts: ['api.example.com'] }), route('wild', { suffixes: ['.example.org'] })]);
    assert.equal(m('api.example.com:8080'), 'api');
    assert.equal(m('api.example.com:'), 'api');
    assert.equal(m('Api.Example.Com:443'), 'api');
    assert.equal(m('a.example.org:80'), 'wild');
  });

  test('treats a fully qualified name with a trailing dot as the name', () => {
    const m = matcher([route('api', { hosts: ['api.example.com'] }), route('wild', { suffixes: ['.example.org'] })]);
    assert.equal(m('api.example.com.'), 'api');
    assert.equal(m('api.example.com.:8080'), 'api');
    assert.equal(m('a.example.org.'), 'wild');
  });

  test('matches IPv6 literal hosts with and without a port', () => {
    const m = matcher([
      route('v6', { hosts: ['::1'] }),
      route('v6-bracketed', { hosts: ['[fe80::1]'] }),
      route('v4', { hosts: ['127.0.0.1'] }),
      route('fallback'),
    ]);
    assert.equal(m('[::1]:80'), 'v6');
    assert.equal(m('[::1]'), 'v6');
    assert.equal(m('[FE80::1]:8443'), 'v6-bracketed');
    assert.equal(m('[::2]:80'), 'fallback');
    assert.equal(m('127.0.0.1:8080'), 'v4');
    assert.equal(m('127.0.0.1'), 'v4');
  });

  test('treats a malformed bracketed host as no host', () => {
    const m = matcher([route('v6', { hosts: ['::1'] }), route('fallback')]);
    assert.equal(m('[::1'), 'fallback');
    assert.equal(m('[::1]x'), 'fallback');
    assert.equal(m('[]:80'), 'fallback');
    assert.equal(m('::1'), 'fallback');
  });

  test('matches a wildcard on any depth of subdomain but not on the bare domain', () => {
    const m = matcher([route('wild', { suffixes: ['.example.com'] })]);
    assert.equal(m('a.example.com'), 'wild');
    assert.equal(m('a.b.example.com'), 'wild');
    assert.equal(m('A.B.C.Example.Com:81'), 'wild');
    assert.equal(m('example.com'), null);
    assert.equal(m('.example.com'), null);
    assert.equal(m('badexample.com'), null);
    assert.equal(m('example.com.evil.net'), null);
    assert.equal(m('a.example.co'), null);
  });

  test('accepts wildcards written with the star', () => {
    const m = matcher([route('wild', { suffixes: ['*.Example.com'] })]);
    assert.equal(m('a.example.com'), 'wild');
    assert.equal(m('example.com'), null);
  });

  test('between an exact name and a wildcard, the earlier route wins', () => {
    const exactFirst = matcher([route('exact', { hosts: ['a.example.com'] }), route('wild', { suffixes: ['.example.com'] })]);
    assert.equal(exactFirst('a.example.com'), 'exact');
    assert.equal(exactFirst('b.example.com'), 'wild');
    const wildFirst = matcher([route('wild', { suffixes: ['.example.com'] }), route('exact', { hosts: ['a.example.com'] })]);
    assert.equal(wildFirst('a.example.com'), 'wild');
  });

  test('between nested wildcards, the earlier route wins', () => {
    const inner = matcher([route('inner', { suffixes: ['.b.example.com'] }), route('outer', { suffixes: ['.example.com'] })]);
    assert.equal(inner('a.b.example.com'), 'inner');
    assert.equal(inner('a.c.example.com'), 'outer');
    assert.equal(inner('b.example.com'), 'outer');
    const outer = matcher([route('outer', { suffixes: ['.example.com'] }), route('inner', { suffixes: ['.b.example.com'] })]);
    assert.equal(outer('a.b.example.com'), 'outer');
  });

  test('falls through a matching host to later routes when the path does not match', () => {
    const m = matcher([
      route('api', { hosts: ['api.example.com'], pathPrefix: '/api' }),
      route('wild-static', { suffixes: ['.example.com'], pathPrefix: '/static' }),
      route('default'),
    ]);
    assert.equal(m('api.example.com', '/api/x'), 'api');
    assert.equal(m('api.example.com', '/static/x'), 'wild-static');
    assert.equal(m('api.example.com', '/x'), 'default');
    assert.equal(m('www.example.com', '/api/x'), 'default');
    assert.equal(m('www.example.com', '/static/a.css'), 'wild-static');
  });

  test('routes without a host match requests with any host or none', () => {
    const m = matcher([route('api', { hosts: ['api.example.com'] }), route('default', { pathPrefix: '/' })]);
    assert.equal(m(undefined), 'default');
    assert.equal(m(''), 'default');
    assert.equal(m(':8080'), 'default');
    assert.equal(m('unknown.example.com'), 'default');
    assert.equal(m('api.example.com'), 'api');
  });

  test('matches the path prefix on the path before the query', () => {
    const m = matcher([
      route('api', { pathPrefix: '/api' }),
      route('query-in-prefix', { pathPrefix: '/search?q' }),
      route('default', { pathPrefix: '/' }),
    ]);
    assert.equal(m('x', '/api?x=1'), 'api');
    assert.equal(m('x', '/api/users?x=1'), 'api');
    assert.equal(m('x', '/ap?i=/api'), 'default');
    assert.equal(m('x', '/search?q=1'), 'default');
    assert.equal(m('x', '/apiary'), 'api');
  });

  test('matches only the listed methods', () => {
    const m = matcher([route('writes', { methods: ['POST', 'PUT'] }), route('rest')]);
    assert.equal(m('x', '/', 'POST'), 'writes');
    assert.equal(m('x', '/', 'PUT'), 'writes');
    assert.equal(m('x', '/', 'GET'), 'rest');
    assert.equal(m('x', '/', 'post'), 'rest');
  });

  test('matches header values exactly, and a missing header never', () => {
    const m = matcher([route('canary', { headers: [['x-canary', '1'], ['x-env', 'prod']] }), route('rest')]);
    assert.equal(m('x', '/', 'GET', { 'x-canary': '1', 'x-env': 'prod' }), 'canary');
    assert.equal(m('x', '/', 'GET', { 'x-canary': '1' }), 'rest');
    assert.equal(m('x', '/', 'GET', { 'x-canary': '1 ', 'x-env': 'prod' }), 'rest');
    assert.equal(m('x', '/', 'GET', { 'x-canary': '1', 'x-env': 'Prod' }), 'rest');
    assert.equal(m('x', '/', 'GET', {}), 'rest');
  });

  test('matches a header sent several times when one of its values is the one wanted', () => {
    const m = matcher([route('cookie', { headers: [['set-cookie', 'a=1']] }), route('rest')]);
    assert.equal(m('x', '/', 'GET', { 'set-cookie': ['b=2', 'a=1'] }), 'cookie');
    assert.equal(m('x', '/', 'GET', { 'set-cookie': ['b=2'] }), 'rest');
  });

  test('applies a route only to the listeners it names, or to all when it names none', () => {
    const m = matcher([
      route('admin-only', { listeners: ['admin'], pathPrefix: '/' }),
      route('web-api', { listeners: ['web'], hosts: ['api.example.com'] }),
      route('everywhere'),
    ]);
    assert.equal(m('api.example.com', '/', 'GET', {}, 0), 'web-api');
    assert.equal(m('api.example.com', '/', 'GET', {}, 1), 'admin-only');
    assert.equal(m('other', '/', 'GET', {}, 0), 'everywhere');
  });

  test('returns null for a listener index it does not know', () => {
    const m = matcher([route('everywhere')]);
    assert.equal(m('x', '/', 'GET', {}, 2), null);
    assert.equal(m('x', '/', 'GET', {}, -1), null);
  });

  test('tells apart two host names whose hashes collide', () => {
    const [first, second] = findCollision();
    assert.equal(hostHash(first), hostHash(second));
    const both = matcher([route('first', { hosts: [first] }), route('second', { hosts: [second] }), route('default')]);
    assert.equal(both(first), 'first');
    assert.equal(both(second.toUpperCase()), 'second');
    const one = matcher([route('first', { hosts: [first] }), route('default')]);
    assert.equal(one(second), 'default');
    assert.equal(one(first), 'first');
  });

  test('finds each of 500 host routes and the catch-all behind them', () => {
    const routes: RouteConfig[] = [];
    for (let i = 0; i < 500; i++) routes.push(route(`r${i}`, { hosts: [`svc${i}.example.com`] }));
    routes.push(route('default'));
    const m = matcher(routes);
    for (let i = 0; i < 500; i++) assert.equal(m(`SVC${i}.example.com:8080`), `r${i}`);
    assert.equal(m('svc500.example.com'), 'default');
  });

  test('agrees with a plain first-match scan on thousands of random requests', () => {
    let seed = 0x1234567;
    const random = (n: number): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pickOf = <T>(xs: readonly T[]): T => xs[random(xs.length)];
    const names = ['api.example.com', 'www.example.com', 'example.com', 'a.b.example.com', 'b.example.com', 'x.test',
      'foo.bar.test', '127.0.0.1', 'localhost', '::1', 'example.org'];
    const suffixes = ['.example.com', '.b.example.com', '.test', '.com', '.bar.test'];
    const prefixes = ['/', '/api', '/api/v1', '/static', '', '/a?b'];
    const methods = ['GET', 'POST', 'PUT', 'DELETE'];
    const paths = ['/', '/api', '/api/v1/x', '/api?x', '/static/a.css', '/other', '/a?b', '/ap?i'];

    for (let config = 0; config < 60; config++) {
      const routes: RouteConfig[] = [];
      const count = 1 + random(25);
      for (let i = 0; i < count; i++) {
        const kind = random(4);
        routes.push(route(`r${i}`, {
          hosts: kind === 1 || kind === 3 ? [pickOf(names), pickOf(names)].slice(0, 1 + random(2)) : [],
          suffixes: kind === 2 || kind === 3 ? [pickOf(suffixes)] : [],
          pathPrefix: pickOf(prefixes),
          methods: random(4) === 0 ? [pickOf(methods)] : [],
          headers: random(5) === 0 ? [['x-env', 'prod']] : [],
          listeners: random(5) === 0 ? [pickOf(LISTENERS)] : [],
        }));
      }
      const router = new Router(routes, LISTENERS);
      for (let i = 0; i < 300; i++) {
        const host = randomHost(pickOf(names), random);
        const path = pickOf(paths);
        const method = pickOf(methods);
        const headers: IncomingHttpHeaders = random(2) === 0 ? { 'x-env': 'prod' } : {};
        const listener = random(2);
        const got = router.match(listener, host, path, method, headers)?.name ?? null;
        const want = reference(routes, LISTENERS[listener], host, path, method, headers);
        assert.equal(got, want, `config ${config}: ${JSON.stringify({ host, path, method, headers, listener, routes })}`);
      }
    }
  });
});

/** The Host header a client might send for `name`: any case, maybe a port, a trailing dot, brackets. */
function randomHost(name: string, random: (n: number) => number): string | undefined {
  if (random(20) === 0) return undefined;
  if (random(30) === 0) return '';
  // Half in lower case, as browsers send them (the router has a fast path for those).
  const mixed = random(2) === 0;
  let h = '';
  for (const c of name) h += mixed && random(3) === 0 ? c.toUpperCase() : c;
  if (name.includes(':')) h = random(5) === 0 ? h : `[${h}]`;
  else if (random(6) === 0) h += '.';
  if (random(3) === 0) h += `:${8000 + random(100)}`;
  return h;
}

/** What the router should answer, by the plainest reading of the rules. */
function reference(
  routes: readonly RouteConfig[], listener: string, host: string | undefined, path: string, method: string,
  headers: IncomingHttpHeaders,
): string | null {
  let name: string | null = null;
  let bracketed = false;
  if (host !== undefined) {
    const h = host.toLowerCase();
    if (h.startsWith('[')) {
      bracketed = true;
      const m = /^\[([^\]]*)\](:.*)?$/.exec(h);
      name = m === null ? null : m[1];
    } else {
      name = h.split(':')[0];
      if (name.endsWith('.')) name = name.slice(0, -1);
    }
    if (name === '') name = null;
  }
  const pathOnly = path.split('?')[0];
  for (const r of routes) {
    if (r.listeners.length > 0 && !r.listeners.includes(listener)) continue;
    const m = r.match;
    if (m.hosts.length > 0 || m.hostSuffixes.length > 0) {
      if (name === null) continue;
      const n = name;
      const exact = m.hosts.some((h) => h.toLowerCase().replace(/^\[(.*)\]$/, '$1') === n);
      const wild = !bracketed && m.hostSuffixes.some((s) => n.length > s.length && n.endsWith(s));
      if (!exact && !wild) continue;
    }
    if (!pathOnly.startsWith(m.pathPrefix)) continue;
    if (m.methods.length > 0 && !m.methods.includes(method)) continue;
    const headersMatch = m.headers.every(([k, v]) => {
      const x = headers[k];
      return typeof x === 'string' ? x === v : Array.isArray(x) && x.includes(v);
    });
    if (!headersMatch) continue;
    return r.name;
  }
  return null;
}

/** Two distinct host names with the same router hash (a birthday search: ~40k names). */
function findCollision(): [string, string] {
  const seen = new Map<number, string>();
  for (let i = 0; ; i++) {
    const name = `h${i.toString(36)}.example.com`;
    const h = hostHash(name);
    const other = seen.get(h);
    if (other !== undefined) return [other, name];
    seen.set(h, name);
  }
}
