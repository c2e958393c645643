import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import type buildConnectorType from 'undici/lib/core/connect.js';
import type { BackendConfig, UpstreamTlsConfig } from '../config/types.ts';
import { buildConnector } from './undici.ts';

// TLS towards a pool's https:// backends, for proxied requests and health checks alike.
// The name sent as SNI and verified against the backend's certificate is the pool's
// `tls.servername`, else the backend's own host name (none for an IP address, whose
// certificate is then checked for that IP). It is never the client's Host header:
// undici would otherwise send each client's host as SNI and reconnect whenever it changes.

export interface UpstreamTls {
  /** undici's `connect` option: a connector that always uses the pool's TLS settings. */
  readonly connect: buildConnectorType.connector;
}

/** The connector for one https:// backend; null for http:// ones. */
export function upstreamTls(backend: BackendConfig, tls: UpstreamTlsConfig | null, connectTimeout: number): UpstreamTls | null {
  if (backend.protocol !== 'https:') return null;
  const file = (f: string | null | undefined) => (f == null ? undefined : readFileSync(f));
  const servername = tls?.servername ?? (isIP(backend.host) === 0 ? backend.host : undefined);
  const base = buildConnector({
    ca: file(tls?.ca),
    cert: file(tls?.cert),
    key: file(tls?.key),
    rejectUnauthorized: tls?.verify ?? true,
    timeout: connectTimeout,
    // Backends are spoken to in HTTP/1.1, pooled and reused like plain ones.
    allowH2: false,
  });
  const connect: buildConnectorType.connector = (options, callback) => base({ ...options, servername }, callback);
  return { connect };
}
