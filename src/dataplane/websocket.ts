import type { ClientRequest, IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createProxyServer, type ServerOptions } from 'http-proxy-3';
import { errors } from '../errors.ts';
import type { Backend } from '../pool/backend.ts';
import type { PoolRuntime } from './generation.ts';
import type { ForwardContext } from './headers.ts';
import { errorBody } from './forward.ts';
import type { UpgradeResult } from './telemetry.ts';

// WebSocket and other Upgrade requests go through http-proxy-3. Each upgraded session
// gets a fresh upstream connection (no agent): an upgraded socket is never reusable, and
// a backend that answers the upgrade with a plain response must leave nothing open.
const proxy = createProxyServer({ ws: true, xfwd: false, agent: false as unknown as undefined });

const kSession = Symbol('tandem.ws');

/** How an upgrade ended, for the metrics; told once per upgrade request. */
export type UpgradeReport = (result: UpgradeResult, errorCode: string | null) => void;

interface Session {
  readonly backend: Backend;
  readonly pool: PoolRuntime;
  report: UpgradeReport | null;
}
type SessionSocket = Socket & { [kSession]?: Session };

/** Tells the session's outcome once. */
function settle(session: Session, result: UpgradeResult, errorCode: string | null): void {
  const report = session.report;
  session.report = null;
  report?.(result, errorCode);
}

proxy.on('error', (err: Error, _req: unknown, target: unknown) => {
  const socket = target as SessionSocket;
  const session = socket[kSession];
  if (session === undefined || typeof socket.write !== 'function') return;
  // Nothing written yet: the client still waits for an answer to its upgrade request.
  if (socket.bytesWritten === 0 && socket.writable) {
    const body = errorBody(errors.UPGRADE_FAILED, session.pool.name);
    socket.end(`HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
    settle(session, 'error', errors.UPGRADE_FAILED.code);
  } else {
    socket.destroy();
    settle(session, 'error', errors.UPGRADE_FAILED.code);
  }
  void err;
});

// The backend either switches protocols ('upgrade') or answers with a plain response,
// which http-proxy-3 relays as it is ('response').
proxy.on('proxyReqWs', (proxyReq: ClientRequest, _req: IncomingMessage, socket: SessionSocket) => {
  const session = socket[kSession];
  if (session === undefined) return;
  proxyReq.once('upgrade', () => settle(session, 'success', null));
  proxyReq.once('response', () => settle(session, 'refused', null));
});

/** Proxies one Upgrade request to `backend`, with the same forwarding headers as HTTP. */
export function proxyUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, pool: PoolRuntime,
  backend: Backend, ctx: ForwardContext, report: UpgradeReport | null = null): void {
  const h = req.headers;
  const xff = h['x-forwarded-for'];
  h['x-forwarded-for'] = ctx.trusted && xff ? `${xff}, ${ctx.clientAddress}` : ctx.clientAddress;
  if (!(ctx.trusted && h['x-forwarded-proto'])) h['x-forwarded-proto'] = ctx.proto;
  if (!(ctx.trusted && h['x-forwarded-host']) && h.host !== undefined) h['x-forwarded-host'] = h.host;
  h.via = h.via ? `${h.via}, 1.1 tandem` : '1.1 tandem';
  if (pool.hostFromBackend) h.host = backend.hostHeader;
  else if (pool.hostOverride !== null) h.host = pool.hostOverride;
  for (const name of ['proxy-connection', 'proxy-authorization', 'keep-alive', 'te', 'trailer']) delete h[name];

  const session: Session = { backend, pool, report };
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
