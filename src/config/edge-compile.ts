// The runtime form of the edge features' keys (see edge-schema.ts); compile.ts calls
// these for each listener, route and pool.

import { resolve } from 'node:path';
import type { RawListener, RawPool, RawRoute } from './schema.ts';
import type { HeaderEditConfig, ListenerTlsConfig, RouteConfig, UpstreamTlsConfig } from './types.ts';

type RouteActionFields = Pick<RouteConfig, 'redirect' | 'rewrite' | 'headers' | 'allow' | 'compress'>;

export function compileRouteActions(r: RawRoute): RouteActionFields {
  const edit = (e: { set: Map<string, string>; remove: string[] }): HeaderEditConfig => ({
    set: [...e.set].map(([name, value]) => [name.toLowerCase(), value] as const),
    remove: e.remove.map((name) => name.toLowerCase()),
  });
  return {
    redirect: r.redirect === null ? null : { ...r.redirect, host: r.redirect.host?.toLowerCase() ?? null },
    rewrite: r.rewrite === null ? null : { ...r.rewrite },
    headers: r.headers === null ? null : { request: edit(r.headers.request), response: edit(r.headers.response) },
    allow: r.allow === null ? null : [...r.allow],
    compress: r.compress === null ? null : { types: r.compress.types.map((t) => t.toLowerCase()), minSize: r.compress.minSize },
  };
}

export function compileListenerTls(l: RawListener, dir: string): ListenerTlsConfig | null {
  const t = l.tls;
  if (t === null) return null;
  const given = t.certificates ?? (t.cert !== null && t.key !== null ? [{ cert: t.cert, key: t.key }] : []);
  const certificates = given.map((c) => ({ cert: resolve(dir, c.cert ?? ''), key: resolve(dir, c.key ?? '') }));
  return {
    certificates,
    cert: certificates[0].cert,
    key: certificates[0].key,
    minVersion: t.minVersion,
    ciphers: t.ciphers,
    clientCa: t.clientCa === null ? null : resolve(dir, t.clientCa),
  };
}

export function compileUpstreamTls(p: RawPool, dir: string): UpstreamTlsConfig | null {
  const t = p.tls;
  if (t === null) return null;
  const file = (f: string | null) => (f === null ? null : resolve(dir, f));
  return { ca: file(t.ca), servername: t.servername, verify: t.verify, cert: file(t.cert), key: file(t.key) };
}
