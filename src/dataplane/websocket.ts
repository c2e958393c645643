import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createProxyServer, type ServerOptions } from 'http-proxy-3';
import { errors } from '../errors.ts';
import type { Backend } from '../pool/backend.ts';
import type { PoolRuntime } from './generation.ts';
import type { ForwardContext } from './headers.ts';
import { errorBody } from './forward.ts';

// WebSocket and other Upgrade requests go through http-proxy-3. Each upgraded session
// gets a fresh upstream connection (no agent): an upgraded socket is never reusable, and
// a backend that answers the upgrade with a plain response must leave nothing open.
const proxy = createProxyServer({ ws: true, xfwd: false, agent: false as unknown as undefined });

const kSession = Symbol('tandem.ws');
type SessionSocket = Socket & { [kSession]?: { backend: Backend; pool: PoolRuntime } };

proxy.on('error', (err: Error, _req: unknown, target: unknown) => {
  const socket = target as SessionSocket;
  const session = socket[kSession];
  if (session === undefined || typeof socket.write !== 'function') return;
  // Nothing written yet: the client still waits for an answer to its upgrade request.
  if (socket.bytesWritten === 0 && socket.writable) {
    const body = errorBody(errors.UPGRADE_FAILED, session.pool.name);
    socket.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  } else {
    socket.destroy();
  }
  void err;
});

/** Proxies one Upgrade request to `backend`, with the same forwarding headers as HTTP. */
export function proxyUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, pool: PoolRuntime,
  backend: Backend, ctx: ForwardContext): void {
  const h = req.headers;
  const xff = h['x-forwarded-for'];
  h['x-forwarded-for'] = ctx.trusted && xff ? `${xff}, ${ctx.clientAddress}` : ctx.clientAddress;
  if (!(ctx.trusted && h['x-forwarded-proto'])) h['x-forwarded-proto'] = ctx.proto;
  if (!(ctx.trusted && h['x-forwarded-host']) && h.host !== undefined) h['x-forwarded-host'] = h.host;
  h.via = h.via ? `${h.via}, 1.1 tandem` : '1.1 tandem';
  if (pool.hostFromBackend) h.host = backend.hostHeader;
  else if (pool.hostOverride !== null) h.host = pool.hostOverride;
  for (const name of ['proxy-connection', 'proxy-authorization', 'keep-alive', 'te', 'trailer']) delete h[name];

  const session = { backend, pool };
  (socket as SessionSocket)[kSession] = session;
  backend.active++;
  pool.activeRequests++;
  socket.once('close', () => {
    backend.active--;
    pool.activeRequests--;
  });
  proxy.ws(req, socket as Socket, head, {
    target: backend.config.origin,
    proxyTimeout: pool.config.responseTimeout,
    connectTimeout: pool.config.connectTimeout,
  } as ServerOptions);
}
