// Micro-benchmark of the response half of the request path: ProxyRequest's
// onResponseStart (headers rewritten, writeHead), onResponseData and onResponseEnd (and
// with it finish()), on a real node ServerResponse with no socket (its output is
// buffered and dropped with it), for routes without and with `compress`.
//   node bench/micro/forward.ts [--against DIR]
// --against DIR also times the same path of another source tree (DIR holds its src/,
// e.g. `git archive main src | tar -x -C DIR`), in the same process with rounds
// interleaved, so that a busy machine slows both alike; the ratio is taken per round.

import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { Dispatcher } from 'undici';
import type { CompressConfig, PoolConfig, RouteConfig } from '../../src/config/types.ts';
import type { RequestObserver } from '../../src/dataplane/exchange.ts';
import type { RouteRuntime } from '../../src/dataplane/generation.ts';
import type { ForwardContext } from '../../src/dataplane/headers.ts';
import { sink } from './measure.ts';

const OPS = 20_000;
const ROUNDS = 21;

const req = new IncomingMessage(new Socket());
req.httpVersion = '1.1';
req.method = 'GET';
req.url = '/';
req.rawHeaders = ['Host', 'shop.example.com', 'Accept-Encoding', 'gzip, deflate, br'];
req.headers = { host: 'shop.example.com', 'accept-encoding': 'gzip, deflate, br' };
req.complete = true;

const poolConfig: PoolConfig = {
  name: 'p', balance: 'weighted-round-robin', hostHeader: 'preserve', healthCheck: null, outlier: null,
  connectTimeout: 1000, responseTimeout: 5000, idleTimeout: 5000, queueSize: 1024, queueTimeout: 5000, retries: 1,
  retryBudgetPercent: 20, slowStart: 0, panic: false, sticky: null, debugHeaders: false,
  backends: [{ name: 'b', origin: 'http://127.0.0.1:9', protocol: 'http:', host: '127.0.0.1', port: 9, weight: 1, backup: false, maxConnections: 128 }],
};
const routeConfig: RouteConfig = { name: 'r', listeners: [], match: { hosts: [], hostSuffixes: [], pathPrefix: '/', methods: [], headers: [] }, pool: 'p', rateLimit: null };
const ctx: ForwardContext = { clientAddress: '203.0.113.7', trusted: false, proto: 'http', listener: 0, plane: { active: 0 }, owner: { config: { sendTimeout: 30_000 } } };
const observer: RequestObserver = { finished: () => {}, logged: () => {}, switched: () => {} };
const controller = { aborted: false, paused: false, reason: null, abort() {}, pause() {}, resume() {} } as unknown as Dispatcher.DispatchController;
const body = Buffer.alloc(100, 'x');

type Respond = (type: string) => void;

/** The response path of the source tree at `root`, for a route with `compress` (null: without). */
async function tree(root: string, compress: CompressConfig | null): Promise<Respond | null> {
  const { ProxyRequest } = await import(resolve(root, 'src/dataplane/forward.ts'));
  const { poolRuntime } = await import(resolve(root, 'src/dataplane/generation.ts'));
  const { Pool } = await import(resolve(root, 'src/pool/pool.ts'));
  const poolRt = poolRuntime(new Pool(poolConfig, null), null, null);
  const backend = poolRt.pool.backends[0];
  let compressor: unknown = null;
  if (compress !== null) {
    // A tree from before compression existed has no such route.
    const mod = await import(resolve(root, 'src/dataplane/compress.ts')).catch(() => null);
    if (mod === null) return null;
    compressor = mod.Compressor.of(compress);
  }
  const route = { config: routeConfig, name: 'r', pool: poolRt, handles: [], actions: null, limiter: null, compress: compressor } as RouteRuntime;
  return (type) => {
    const res = new ServerResponse(req);
    const p = new ProxyRequest(req, res, route, poolRt, ctx, observer, 0, false, 'id', null);
    p.backend = backend;
    backend.active++;
    poolRt.activeRequests++;
    p.onResponseStart(controller, 200, { 'content-type': type, 'content-length': '100', date: 'Sat, 21 Nov 2026 22:00:00 GMT', etag: '"abc"', connection: 'keep-alive' });
    p.onResponseData(controller, body);
    p.onResponseEnd();
    sink.value = res;
  };
}

interface Case { readonly label: string; readonly run: Respond; readonly type: string; readonly times: number[] }

const { values } = parseArgs({ options: { against: { type: 'string' } } });
const here = resolve(import.meta.dirname, '../..');
const on: CompressConfig = { types: ['text/*', 'application/json'], minSize: 1024 };
const cases: Case[] = [];
const add = (label: string, run: Respond | null, type: string) => { if (run !== null) cases.push({ label, run, type, times: [] }); };
if (values.against !== undefined) add(`${values.against}: route without compress`, await tree(values.against, null), 'application/json');
add('route without compress', await tree(here, null), 'application/json');
add('compress: true, image/png (left alone)', await tree(here, on), 'image/png');
add('compress: true, json below minSize (Vary only)', await tree(here, on), 'application/json');

for (const c of cases) for (let i = 0; i < 3 * OPS; i++) c.run(c.type); // warm-up
for (let r = 0; r < ROUNDS; r++) {
  for (const c of cases) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < OPS; i++) c.run(c.type);
    c.times.push(Number(process.hrtime.bigint() - start) / OPS);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = cases[0];
console.log(`ProxyRequest response path (head, one 100-byte chunk, end): median of ${ROUNDS} interleaved rounds of ${OPS}; ratio to the first line, per round`);
for (const c of cases) {
  const ratios = c.times.map((t, i) => t / base.times[i]);
  const sorted = [...ratios].sort((a, b) => a - b);
  console.log(`${c.label.padEnd(56)} ${median(c.times).toFixed(0).padStart(6)} ns/op   ×${median(ratios).toFixed(3)} (${sorted[Math.floor(ROUNDS / 4)].toFixed(3)}–${sorted[Math.floor((3 * ROUNDS) / 4)].toFixed(3)})`);
}
