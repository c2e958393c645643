import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
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

/** The TLS options of a connection to an https:// backend (node:tls names them alike). */
export interface UpstreamTlsOptions {
  readonly ca: Buffer | undefined;
  readonly cert: Buffer | undefined;
  readonly key: Buffer | undefined;
  readonly rejectUnauthorized: boolean;
  readonly servername: string | undefined;
}

/** The pool's TLS settings for one backend, files read now. */
export function upstreamTlsOptions(backend: BackendConfig, tls: UpstreamTlsConfig | null): UpstreamTlsOptions {
  const file = (f: string | null | undefined) => (f == null ? undefined : readFileSync(f));
  return {
    ca: file(tls?.ca),
    cert: file(tls?.cert),
    key: file(tls?.key),
    rejectUnauthorized: tls?.verify ?? true,
    servername: tls?.servername ?? (isIP(backend.host) === 0 ? backend.host : undefined),
  };
}

/** The connector for one https:// backend; null for http:// ones. */
export function upstreamTls(backend: BackendConfig, tls: UpstreamTlsConfig | null, connectTimeout: number): UpstreamTls | null {
  if (backend.protocol !== 'https:') return null;
  const { servername, ...options } = upstreamTlsOptions(backend, tls);
  const base = buildConnector({
    ...options,
    timeout: connectTimeout,
    // Backends are spoken to in HTTP/1.1, pooled and reused like plain ones.
    allowH2: false,
  });
  const connect: buildConnectorType.connector = (options, callback) => base({ ...options, servername }, callback);
  return { connect };
}

/**
 * What an https:// backend's connections were made with: the pool's TLS settings and
 * the content of their files. A reload that changes it (a renewed client certificate
 * at the same path included) gives the backend new connections; '' for http://.
 */
export function upstreamTlsKey(backend: BackendConfig, tls: UpstreamTlsConfig | null): string {
  if (backend.protocol !== 'https:') return '';
  const hash = createHash('sha256').update(JSON.stringify(tls));
  for (const f of [tls?.ca, tls?.cert, tls?.key]) {
    if (f == null) continue;
    try {
      hash.update(readFileSync(f));
    } catch {
      // Unreadable now: the reload's validation or the next connection says so.
      hash.update(`unreadable ${f}`);
    }
  }
  return hash.digest('hex');
}
