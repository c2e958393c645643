// Baseline: a plain node:http server proxying with http-proxy-3 through a keep-alive
// agent, as its README sets it up, plus X-Forwarded-* headers (tandem adds them too).
//
//   node bench/targets/http-proxy-3.ts http://127.0.0.1:PORT    # prints {"port":N}

import { Agent, createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createProxyServer } from 'http-proxy-3';

const target = process.argv[2];
// Without a keep-alive agent http-proxy opens a new upstream connection per request;
// 128 sockets is what tandem and @fastify/reply-from allow per backend.
const agent = new Agent({ keepAlive: true, maxSockets: 128 });
const proxy = createProxyServer({ target, agent, xfwd: true });

proxy.on('error', (_err: Error, _req: IncomingMessage, res: ServerResponse | unknown) => {
  const r = res as ServerResponse;
  if (typeof r.writeHead !== 'function') return;
  if (!r.headersSent) r.writeHead(502);
  r.end();
});

const server = createServer((req, res) => proxy.web(req, res));
server.listen({ host: '127.0.0.1', port: 0 }, () => {
  process.stdout.write(JSON.stringify({ port: (server.address() as AddressInfo).port }) + '\n');
});
process.on('SIGTERM', () => process.exit(0));
