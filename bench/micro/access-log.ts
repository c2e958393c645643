// Micro-benchmark of what the access log and request ids cost each request:
//   node bench/micro/access-log.ts
// requestIdOf(): the client's X-Request-Id checked and kept, or a new one made.
// traceOf(): a traceparent checked for the log's trace id.
// AccessLog.write(): one line made and buffered (written to /dev/null once per 64 KiB).

import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';
import { AccessLog } from '../../src/dataplane/access-log.ts';
import type { Exchange } from '../../src/dataplane/exchange.ts';
import { requestIdOf, traceOf } from '../../src/dataplane/request-id.ts';
import { bench, sink } from './measure.ts';

const OPS = 20_000;

function request(headers: Record<string, string>): IncomingMessage {
  const req = new IncomingMessage(new Socket());
  req.httpVersion = '1.1';
  req.method = 'GET';
  req.url = '/api/v1/users/42?fields=name';
  req.headers = { host: 'shop.example.com', ...headers };
  return req;
}

const plain = request({});
const identified = request({ 'x-request-id': 'f3b0c442-98fc-1c14-9afb-4c8996fb9242' });
const traced = request({ traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' });

console.log(`access log and request ids, median of 5 rounds of ${OPS} ops`);
bench('requestIdOf: none given, a new UUID', { ops: OPS }, (n) => {
  for (let i = 0; i < n; i++) sink.value = requestIdOf(plain);
});
bench('requestIdOf: a sane one kept', { ops: OPS }, (n) => {
  for (let i = 0; i < n; i++) sink.value = requestIdOf(identified);
});
bench('traceOf: a valid traceparent', { ops: OPS }, (n) => {
  for (let i = 0; i < n; i++) sink.value = traceOf(traced);
});

const log = new AccessLog('/dev/null');
const exchange: Exchange = {
  req: traced, ctx: { clientAddress: '203.0.113.7', trusted: false, proto: 'http', listener: 0, plane: { active: 0 }, owner: { config: { sendTimeout: 30_000 } } },
  route: { pool: { name: 'web' } } as Exchange['route'], backend: { name: 'web-1' } as Exchange['backend'],
  status: 200, start: 0, bytes: 512, received: 0, retries: 0, errorCode: null,
  requestId: 'f3b0c442-98fc-1c14-9afb-4c8996fb9242', traceId: '4bf92f3577b34da6a3ce929d0e0e4736', upgrade: false,
};
bench('AccessLog.write: one line', { ops: OPS }, (n) => {
  for (let i = 0; i < n; i++) log.write(exchange, 0.003127);
});
await log.close();
