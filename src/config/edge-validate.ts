// What the edge features' schema cannot see: TLS files that must exist and be readable,
// keys that only make sense together, and keys that conflict.

import { resolve } from 'node:path';
import type { Context } from './reader.ts';
import type { RawListener, RawPool, RawRoute } from './schema.ts';

type FileCheck = (spot: ReturnType<Context['at']>, file: string, valid: string) => void;

export function checkListenerTls(l: RawListener, cx: Context, readable: FileCheck): void {
  const t = l.tls;
  if (t === null) return;
  const here = (value: object, key: string, file: string | null | undefined, valid: string) => {
    if (typeof file === 'string') readable(cx.at(value, key), resolve(cx.dir, file), valid);
  };
  const single = t.cert !== null || t.key !== null;
  if (single && t.certificates !== null) {
    cx.failAt(cx.at(t, 'certificates'), 'cannot be given with cert and key (list every certificate under certificates, or give one cert and key)');
  } else if (!single && t.certificates === null) {
    cx.failAt(cx.at(l, 'tls'), 'needs a certificate (give cert and key, or certificates: [{ cert, key }, ...])');
  } else if (single && (t.cert === null || t.key === null)) {
    cx.failAt(cx.at(t, t.cert === null ? 'cert' : 'key'), `is missing (must be a file path; cert and key go together)`);
  }
  here(t, 'cert', t.cert, 'a readable PEM certificate file');
  here(t, 'key', t.key, 'a readable PEM key file');
  for (const c of t.certificates ?? []) {
    here(c, 'cert', c.cert, 'a readable PEM certificate file');
    here(c, 'key', c.key, 'a readable PEM key file');
  }
  here(t, 'clientCa', t.clientCa, 'a readable PEM CA bundle');
}

export function checkRouteActions(r: RawRoute, cx: Context): void {
  const w = r.rewrite;
  if (w !== null && w.stripPrefix === null && w.addPrefix === null) {
    cx.failAt(cx.at(r, 'rewrite'), 'needs stripPrefix, addPrefix or both');
  }
  if (r.redirect !== null && (r.rewrite !== null || r.headers !== null || r.compress !== null)) {
    const key = r.rewrite !== null ? 'rewrite' : r.headers !== null ? 'headers' : 'compress';
    cx.failAt(cx.at(r, key), 'has no effect on a route that redirects (the request is answered with the redirect, not forwarded)');
  }
  const rd = r.redirect;
  if (rd !== null && rd.scheme === null && rd.host === null && rd.port === null && rd.path === null) {
    cx.failAt(cx.at(r, 'redirect'), 'would send the client to the same URL (give at least one of scheme, host, port, path)');
  }
}

export function checkPoolTls(pool: RawPool, cx: Context, readable: FileCheck): void {
  const t = pool.tls;
  if (t === null) return;
  if ((t.cert === null) !== (t.key === null)) {
    cx.failAt(cx.at(t, t.cert === null ? 'cert' : 'key'), 'is missing (a client certificate needs both cert and key)');
  }
  for (const [key, valid] of [['ca', 'a readable PEM CA bundle'], ['cert', 'a readable PEM certificate file'], ['key', 'a readable PEM key file']] as const) {
    const file = t[key];
    if (file !== null) readable(cx.at(t, key), resolve(cx.dir, file), valid);
  }
  const plain = (pool.backends ?? []).filter((b) => b.url !== undefined && b.url.protocol !== 'https:');
  if (plain.length > 0) {
    cx.failAt(cx.at(pool, 'tls'), `applies to https:// backends only (${plain.map((b) => b.name ?? '?').join(', ')} use http://)`);
  }
}
