import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BackendConfig, PoolConfig } from '../../src/config/types.ts';
import { Pool } from '../../src/pool/pool.ts';
import { cookieValue, Sticky } from '../../src/pool/sticky.ts';
import { poolConfig } from '../helpers/backends.ts';

const backends: BackendConfig[] = [1, 2, 3].map((i) => ({
  name: `app${i}`,
  origin: `http://10.1.2.${i}:8080`,
  protocol: 'http:',
  host: `10.1.2.${i}`,
  port: 8080,
  weight: 1,
  backup: false,
  maxConnections: 4,
}));

function config(overrides: Partial<PoolConfig> = {}): PoolConfig {
  return poolConfig('shop', backends, { sticky: { cookie: 'srv', ttl: 3_600_000 }, ...overrides });
}

/** The `name=value` part of a Set-Cookie value, as a browser sends it back. */
function sentBack(setCookie: string): string {
  return setCookie.slice(0, setCookie.indexOf(';'));
}

test('a client that sends its cookie back stays on its backend for 100 requests', () => {
  const pool = new Pool(config(), null);
  const sticky = new Sticky(pool, 'secret');
  const first = pool.pick()!;
  const cookie = `theme=dark; ${sentBack(sticky.setCookie(first))}; lang=en`;
  for (let i = 0; i < 100; i++) assert.equal(sticky.lookup(cookie), first);
});

test('two instances with the same config and secret agree on every backend without talking', () => {
  const a = new Pool(config(), null);
  const b = new Pool(config(), null);
  const sa = new Sticky(a, 'secret');
  const sb = new Sticky(b, 'secret');
  for (const backend of a.backends) {
    const value = sa.setCookie(backend);
    assert.equal(sb.setCookie(b.byName.get(backend.name)!), value);
    assert.equal(sb.lookup(sentBack(value)), b.byName.get(backend.name));
  }
});

test('the id depends on the secret, the cookie name and the pool', () => {
  const pool = new Pool(config(), null);
  const base = sentBack(new Sticky(pool, 'secret').setCookie(pool.backends[0])).split('=')[1];
  const others: [Pool, string][] = [
    [pool, 'another secret'],
    [new Pool(config({ sticky: { cookie: 'srv2', ttl: 1000 } }), null), 'secret'],
    [new Pool(config({ name: 'shop2' }), null), 'secret'],
  ];
  for (const [p, secret] of others) {
    const id = sentBack(new Sticky(p, secret).setCookie(p.backends[0])).split('=')[1];
    assert.notEqual(id, base);
  }
});

test('an unavailable backend is not returned, so the forwarder picks again', () => {
  const pool = new Pool(config(), null);
  const sticky = new Sticky(pool, 'secret');
  const [a, b, c] = pool.backends;
  const ca = sentBack(sticky.setCookie(a));
  const cb = sentBack(sticky.setCookie(b));
  const cc = sentBack(sticky.setCookie(c));
  a.setHealthy(false, 'test');
  b.setEjected(true, 'test');
  c.setAdmin('draining', 'test');
  assert.equal(sticky.lookup(ca), null);
  assert.equal(sticky.lookup(cb), null);
  assert.equal(sticky.lookup(cc), null);
  a.setHealthy(true, 'test');
  assert.equal(sticky.lookup(ca), a);
});

test('the cookie shows neither the address nor the name of the backend', () => {
  const pool = new Pool(config(), null);
  for (const secret of ['', 'secret']) {
    const sticky = new Sticky(pool, secret);
    for (const b of pool.backends) {
      const value = sticky.setCookie(b);
      const id = sentBack(value).split('=')[1];
      assert.match(id, /^[A-Za-z0-9_-]{22}$/);
      for (const clear of [b.name, b.config.host, b.config.origin, '8080', '10.1.2', Buffer.from(b.name).toString('base64url')]) {
        assert.ok(!value.includes(clear), `${value} contains ${clear}`);
      }
    }
  }
});

test('Set-Cookie carries Max-Age from the ttl, Path, HttpOnly and SameSite=Lax, and Secure when asked', () => {
  const pool = new Pool(config(), null);
  const sticky = new Sticky(pool, 'secret');
  const b = pool.backends[0];
  assert.match(sticky.setCookie(b), /^srv=[A-Za-z0-9_-]{22}; Max-Age=3600; Path=\/; HttpOnly; SameSite=Lax$/);
  assert.match(sticky.setCookie(b, true), /; SameSite=Lax; Secure$/);
  const sessionPool = new Pool(config({ sticky: { cookie: 'srv', ttl: 0 } }), null);
  assert.doesNotMatch(new Sticky(sessionPool, 'secret').setCookie(sessionPool.backends[0]), /Max-Age/);
});

test('unknown, foreign and missing cookies find nothing', () => {
  const pool = new Pool(config(), null);
  const sticky = new Sticky(pool, 'secret');
  assert.equal(sticky.lookup(undefined), null);
  assert.equal(sticky.lookup(''), null);
  assert.equal(sticky.lookup('srv=AAAAAAAAAAAAAAAAAAAAAA'), null);
  assert.equal(sticky.lookup('other=1'), null);
  // An id minted by another pool's Sticky is not ours.
  const foreign = new Pool(config({ name: 'else' }), null);
  assert.equal(sticky.lookup(sentBack(new Sticky(foreign, 'secret').setCookie(foreign.backends[0]))), null);
});

test('the Cookie header scan finds the cookie only at the start of a pair', () => {
  assert.equal(cookieValue('srv=abc', 'srv='), 'abc');
  assert.equal(cookieValue('a=1; srv=abc; b=2', 'srv='), 'abc');
  assert.equal(cookieValue('a=1;srv=abc', 'srv='), 'abc');
  assert.equal(cookieValue('xsrv=nope; srv=abc', 'srv='), 'abc');
  assert.equal(cookieValue('xsrv=nope', 'srv='), null);
  assert.equal(cookieValue('a=srv=nope', 'srv='), null);
  assert.equal(cookieValue('srv="abc"', 'srv='), 'abc');
  assert.equal(cookieValue('srv=abc  ; b=2', 'srv='), 'abc');
  assert.equal(cookieValue('srv=', 'srv='), '');
  assert.equal(cookieValue('', 'srv='), null);
});

test('without an explicit secret the key comes from TANDEM_STICKY_KEY', (t) => {
  const before = process.env.TANDEM_STICKY_KEY;
  t.after(() => {
    if (before === undefined) delete process.env.TANDEM_STICKY_KEY;
    else process.env.TANDEM_STICKY_KEY = before;
  });
  const pool = new Pool(config(), null);
  process.env.TANDEM_STICKY_KEY = 'from the environment';
  const fromEnv = new Sticky(pool).setCookie(pool.backends[1]);
  assert.equal(fromEnv, new Sticky(pool, 'from the environment').setCookie(pool.backends[1]));
  delete process.env.TANDEM_STICKY_KEY;
  assert.notEqual(new Sticky(pool).setCookie(pool.backends[1]), fromEnv);
});
