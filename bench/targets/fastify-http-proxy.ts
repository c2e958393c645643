// Baseline: fastify with @fastify/http-proxy, configured as its docs recommend: undici
// as the upstream client (reply-from's default), its documented pool settings, and the
// logger off (fastify's own benchmarks run without it).
//
//   node bench/targets/fastify-http-proxy.ts http://127.0.0.1:PORT    # prints {"port":N}

import Fastify from 'fastify';
import proxy from '@fastify/http-proxy';

const upstream = process.argv[2];
const app = Fastify({ logger: false });
await app.register(proxy, {
  upstream,
  http2: false,
  undici: { connections: 128, pipelining: 1, keepAliveTimeout: 60_000 },
});
await app.listen({ host: '127.0.0.1', port: 0 });
const address = app.server.address();
process.stdout.write(JSON.stringify({ port: typeof address === 'object' && address !== null ? address.port : 0 }) + '\n');
process.on('SIGTERM', () => {
  void app.close().then(() => process.exit(0));
});
