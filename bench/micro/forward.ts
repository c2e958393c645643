// Micro-benchmark of the response half of the request path: ProxyRequest's
// onResponseStart (headers rewritten, writeHead), onResponseData and onResponseEnd (and
// with it finish()), on a real node ServerResponse with no socket (its output is
// buffered and dropped with it), for routes without and with `compress`.
//   node bench/micro/forward.ts
// Without compress the figure must not move when compression exists; with compress, an
// answer of a type it leaves alone pays only the checks.

import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { Dispatcher } from 'undici';
import type { CompressConfig, PoolConfig, RouteConfig } from '../../src/config/types.ts';
import * as compressModule from '../../src/dataplane/compress.ts';
import { ProxyRequest, type RequestObserver } from '../../src/dataplane/forward.ts';
import { poolRuntime, type RouteRuntime } from '../../src/dataplane/generation.ts';
import type { ForwardContext } from '../../src/dataplane/headers.ts';
import { Pool } from '../../src/pool/pool.ts';
import { bench, sink } from './measure.ts';

const OPS = 20_000;
const ROUNDS = 15;

const req = new IncomingMessage(new Socket());
req.httpVersion = '1.1';
req.method = 'GET';
req.url = '/';
req.rawHeaders = ['Host', 'shop.example.com', 'Accept-Encoding', 'gzip, deflate, br'];
req.headers = { host: 'shop.example.com', 'accept-encoding': 'gzip, deflate, br' };
req.complete = true;

const pool: PoolConfig = {
  name: 'p', balance: 'weighted-round-robin', hostHeader: 'preserve', healthCheck: null, outlier: null,
  connectTimeout: 1000, responseTimeout: 5000, idleTimeout: 5000, queueSize: 1024, queueTimeout: 5000, retries: 1,
  retryBudgetPercent: 20, slowStart: 0, panic: false, sticky: null, debugHeaders: false,
  backends: [{ name: 'b', origin: 'http://127.0.0.1:9', protocol: 'http:', host: '127.0.0.1', port: 9, weight: 1, backup: false, maxConnections: 128 }],
};
const poolRt = poolRuntime(new Pool(pool, null), null, null);
const backend = poolRt.pool.backends[0];

// The same file times the request path of a source tree from before compression existed:
// there, ProxyRequest has no `encoder` and the compress cases are left out.
const probe = new ProxyRequest(req, new ServerResponse(req), {} as RouteRuntime, poolRt, {} as ForwardContext, {} as RequestObserver, 0, false, 'id', null);
const Compressor = 'encoder' in probe ? (compressModule as { Compressor?: { of(c: CompressConfig | null): unknown } }).Compressor : undefined;
function route(compress: CompressConfig | null): RouteRuntime {
  const config: RouteConfig = { name: 'r', listeners: [], match: { hosts: [], hostSuffixes: [], pathPrefix: '/', methods: [], headers: [] }, pool: 'p', rateLimit: null };
  return { config, name: 'r', pool: poolRt, handles: [], actions: null, limiter: null, compress: Compressor?.of(compress) ?? null } as RouteRuntime;
}

const ctx: ForwardContext = { clientAddress: '203.0.113.7', trusted: false, proto: 'http', listener: 0, plane: { active: 0 }, owner: { config: { sendTimeout: 30_000 } } };
const observer: RequestObserver = { finished: () => {}, logged: () => {}, switched: () => {} };
const controller = { aborted: false, paused: false, reason: null, abort() {}, pause() {}, resume() {} } as unknown as Dispatcher.DispatchController;
const body = Buffer.alloc(100, 'x');

function parsed(type: string): Record<string, string> {
  return { 'content-type': type, 'content-length': '100', date: 'Sat, 21 Nov 2026 22:00:00 GMT', etag: '"abc"', connection: 'keep-alive' };
}

function respond(rt: RouteRuntime, type: string): void {
  const res = new ServerResponse(req);
  const p = new ProxyRequest(req, res, rt, poolRt, ctx, observer, 0, false, 'id', null);
  p.backend = backend;
  backend.active++;
  poolRt.activeRequests++;
  p.onResponseStart(controller, 200, parsed(type));
  p.onResponseData(controller, body);
  p.onResponseEnd();
  sink.value = res;
}

console.log(`ProxyRequest response path (head, one 100-byte chunk, end), median of ${ROUNDS} rounds of ${OPS}`);
const plain = route(null);
bench('route without compress', { ops: OPS, rounds: ROUNDS }, (ops) => {
  for (let i = 0; i < ops; i++) respond(plain, 'application/json');
});
if (Compressor !== undefined) {
  const on = route({ types: ['text/*', 'application/json'], minSize: 1024 });
  bench('compress: true, image/png (left alone)', { ops: OPS, rounds: ROUNDS }, (ops) => {
    for (let i = 0; i < ops; i++) respond(on, 'image/png');
  });
  bench('compress: true, json below minSize (Vary only)', { ops: OPS, rounds: ROUNDS }, (ops) => {
    for (let i = 0; i < ops; i++) respond(on, 'application/json');
  });
}
