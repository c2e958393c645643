// The benchmark's origin server: a minimal node:http server in its own process, bound
// to one or more ports on 127.0.0.1 (tandem gets two backends: two ports of this one
// process). Every path answers a fixed ~100-byte body, `/16k` a 16 KiB one; bodies and
// headers are built once, so the origin costs as little as node:http allows.
//
//   node bench/backend.ts 2        # two ports; prints {"ports":[p1,p2]}

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { spawnService, type Service } from './targets/process.ts';

/** The small body: 100 bytes, about what a small JSON API answer is. */
export const SMALL_BODY = Buffer.from('{"service":"bench-origin","status":"ok","items":[1,2,3,4,5],"note":"a small JSON answer"}' + ' '.repeat(10) + '\n');
/** Size of the large body, served at LARGE_PATH. */
export const LARGE_SIZE = 16 * 1024;
export const LARGE_PATH = '/16k';

const LARGE_BODY = Buffer.alloc(LARGE_SIZE, 'abcdefghijklmnopqrstuvwxyz0123456789\n');
const SMALL_HEADERS = { 'content-type': 'application/json', 'content-length': String(SMALL_BODY.length) };
const LARGE_HEADERS = { 'content-type': 'text/plain', 'content-length': String(LARGE_SIZE) };

function onRequest(req: IncomingMessage, res: ServerResponse): void {
  // Drain any request body so the connection stays reusable; the benchmark sends none.
  req.resume();
  if (req.url === LARGE_PATH) {
    res.writeHead(200, LARGE_HEADERS);
    res.end(LARGE_BODY);
  } else {
    res.writeHead(200, SMALL_HEADERS);
    res.end(SMALL_BODY);
  }
}

/** Listens on `count` ports of 127.0.0.1 and resolves with them. */
export async function serve(count: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < count; i++) {
    // keepAliveTimeout above every proxy's upstream idle time, so the origin is never the
    // side that closes an idle pooled connection mid-benchmark.
    const server = createServer({ keepAliveTimeout: 120_000 }, onRequest);
    await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
    ports.push((server.address() as AddressInfo).port);
  }
  return ports;
}

/** The origin as seen from the benchmark: its URLs and a way to stop it. */
export interface Backend {
  readonly urls: string[];
  readonly service: Service;
}

/** Starts the origin in a child process with `count` ports. */
export async function startBackend(count: number): Promise<Backend> {
  const service = await spawnService([join(import.meta.dirname, 'backend.ts'), String(count)]);
  const ports = service.info.ports as number[];
  return { urls: ports.map((p) => `http://127.0.0.1:${p}`), service };
}

if (import.meta.main) {
  const ports = await serve(Number(process.argv[2] ?? '1'));
  process.stdout.write(JSON.stringify({ ports }) + '\n');
  process.on('SIGTERM', () => process.exit(0));
}
