// Micro-benchmark of header rewriting, both ways:
//   node bench/micro/headers.ts
// upstreamHeaders(): the client's raw headers into undici's flat array, X-Forwarded-* set.
// responseHeaders() + writeHead(): undici's parsed response headers into node's response,
// against the earlier way (delete hop-by-hop keys from the object, writeHead the object).

import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { responseHeaders, upstreamHeaders, type ForwardContext } from '../../src/dataplane/headers.ts';
import { RouteActions } from '../../src/dataplane/route-actions.ts';
import { bench, sink } from './measure.ts';

const OPS = 20_000;
const socket = new Socket();
const req = new IncomingMessage(socket);
req.httpVersion = '1.1';
req.method = 'GET';
req.url = '/api/v1/users?id=7';
req.rawHeaders = [
  'Host', 'shop.example.com', 'User-Agent', 'Mozilla/5.0 (X11; Linux x86_64)', 'Accept', 'text/html,application/xhtml+xml',
  'Accept-Language', 'en-GB,en;q=0.9', 'Accept-Encoding', 'gzip, deflate, br', 'Cookie', 'session=abc123; theme=dark',
  'X-Request-Id', 'f3b0c442-98fc-1c14-9afb-4c8996fb9242',
];
for (let i = 0; i < req.rawHeaders.length; i += 2) req.headers[req.rawHeaders[i].toLowerCase()] = req.rawHeaders[i + 1];
const ctx: ForwardContext = { clientAddress: '203.0.113.7', trusted: false, proto: 'http', listener: 0, plane: { active: 0 }, owner: { config: { sendTimeout: 30_000 } } };

/** A response header object shaped as undici parses one (fresh per call: the old way mutated it). */
function parsed(): Record<string, string | string[] | undefined> {
  return {
    'content-type': 'application/json', 'content-length': '100', date: 'Sat, 21 Nov 2026 22:00:00 GMT',
    'cache-control': 'no-store', etag: '"abc"', 'set-cookie': ['a=1', 'b=2'], connection: 'keep-alive', 'keep-alive': 'timeout=5',
  };
}

const HOP = ['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'expect'];
function deleteHopByHop(h: Record<string, string | string[] | undefined>): void {
  for (const name of HOP) if (h[name] !== undefined) delete h[name];
}

console.log(`header rewriting, median of 5 rounds of ${OPS} ops`);
bench('upstreamHeaders (7 client headers)', { ops: OPS }, (n) => {
  for (let i = 0; i < n; i++) sink.value = upstreamHeaders(req, ctx, null, 'f3b0c442-98fc-1c14-9afb-4c8996fb9242', false);
});
const inputs: Record<string, string | string[] | undefined>[] = [];
const prepare = () => { inputs.length = 0; for (let i = 0; i < OPS; i++) inputs.push(parsed()); };
bench('responseHeaders + writeHead(flat array)', { ops: OPS, prepare }, (n) => {
  for (let i = 0; i < n; i++) {
    const res = new ServerResponse(req);
    res.writeHead(200, responseHeaders(inputs[i % OPS]));
    sink.value = res;
  }
});
bench('delete hop-by-hop + writeHead(object) (before)', { ops: OPS, prepare }, (n) => {
  for (let i = 0; i < n; i++) {
    const res = new ServerResponse(req);
    const h = inputs[i % OPS];
    deleteHopByHop(h);
    res.writeHead(200, h as Record<string, string | string[]>);
    sink.value = res;
  }
});

// A route with header rules: the same rewriting plus the rules' edits, both ways.
const actions = RouteActions.of({
  name: 'r', listeners: [], pool: 'p', rateLimit: null, match: { hosts: [], hostSuffixes: [], pathPrefix: '/', methods: [], headers: [] },
  headers: {
    request: { set: [['x-route', 'api']], remove: ['cookie'] },
    response: { set: [['strict-transport-security', 'max-age=63072000']], remove: ['etag'] },
  },
})!;
bench('upstreamHeaders + route header rules', { ops: OPS }, (n) => {
  for (let i = 0; i < n; i++) {
    const h = upstreamHeaders(req, ctx, null, 'f3b0c442-98fc-1c14-9afb-4c8996fb9242', false);
    actions.request!.apply(h, true);
    sink.value = h;
  }
});
bench('responseHeaders + route header rules + writeHead', { ops: OPS, prepare }, (n) => {
  for (let i = 0; i < n; i++) {
    const res = new ServerResponse(req);
    const out = responseHeaders(inputs[i % OPS]);
    actions.response!.apply(out, false);
    res.writeHead(200, out);
    sink.value = res;
  }
});
