// Micro-benchmark of Router.match(): 5 and 500 routes.
//   node bench/micro/route.ts
// A known host must cost the same with 5 and 500 routes, and nothing may be allocated.

import type { IncomingHttpHeaders } from 'node:http';
import type { RouteConfig } from '../../src/config/types.ts';
import { Router } from '../../src/dataplane/router.ts';
import { bench, sink } from './measure.ts';

// Each round matches a batch of fresh copies of the Host string, as each request brings
// its own: V8 caches a string's hash in the string, and a reused one would hide that cost.
const BATCH = 1000;
const ROUNDS = 300;

function route(name: string, hosts: string[], suffixes: string[], pathPrefix: string): RouteConfig {
  return { name, listeners: [], match: { hosts, hostSuffixes: suffixes, pathPrefix, methods: [], headers: [] }, pool: 'p', rateLimit: null };
}

/** `n` routes: n-2 exact hosts, one wildcard, one catch-all. */
function routes(n: number): RouteConfig[] {
  const out: RouteConfig[] = [];
  for (let i = 0; i < n - 2; i++) out.push(route(`r${i}`, [`svc${i}.example.com`], [], i % 2 === 0 ? '/api' : '/'));
  out.push(route('wild', [], ['.apps.example.com'], '/'));
  out.push(route('default', [], [], '/'));
  return out;
}

/** A flat copy of `s`, as header values from node's parser are; a template literal is a rope. */
function flat(s: string): string {
  return Buffer.from(s, 'latin1').toString('latin1');
}

const headers: IncomingHttpHeaders = { 'user-agent': 'bench', accept: '*/*' };
const path = flat('/api/v1/users?id=7');
console.log(`Router.match(), median of ${ROUNDS} rounds of ${BATCH} matches, each on a fresh Host string`);
for (const n of [5, 500]) {
  const router = new Router(routes(n), ['web']);
  const last = `svc${n - 3}.example.com`;
  const cases: [string, string][] = [
    ['last exact host', last],
    ['last exact host, port, upper case', `${last.toUpperCase()}:8080`],
    ['wildcard host', 'shop.eu.apps.example.com'],
    ['unknown host (catch-all)', 'nothing.example.net:8080'],
  ];
  for (const [label, text] of cases) {
    let hosts: string[] = [];
    const prepare = (): void => { hosts = Array.from({ length: BATCH }, () => flat(text)); };
    bench(`${n} routes, ${label}`, { ops: BATCH, rounds: ROUNDS, prepare }, (ops) => {
      let r = null;
      for (let i = 0; i < ops; i++) r = router.match(0, hosts[i], path, 'GET', headers);
      sink.value = r;
    });
  }
}
