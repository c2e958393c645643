// The fast engine's FastUpstream (src/engine/upstream.ts) before a real backend, for tests
// that drive it directly: a plain TCP connector that keeps every socket it makes and can
// be held back, and one GET whose outcome comes as a string.

import { connect as tcp, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Dispatcher } from 'undici';
import { FastUpstream } from '../../src/engine/upstream.ts';

export interface TcpUpstreamOptions {
  /** Every socket the connector makes, in order. */
  readonly sockets?: Socket[];
  /** A connection is handed over only once this resolves. */
  readonly held?: Promise<void>;
  readonly keepAliveTimeout?: number;
  /** Over TLS (any certificate taken): the fast engine then feeds its parser by hand. */
  readonly tls?: boolean;
}

/** A FastUpstream to 127.0.0.1:`port` over plain TCP (or TLS). */
export function tcpUpstream(port: number, opts: TcpUpstreamOptions = {}): FastUpstream {
  const held = opts.held ?? Promise.resolve();
  return new FastUpstream({
    origin: new URL(`${opts.tls === true ? 'https' : 'http'}://127.0.0.1:${port}`),
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
    keepAliveTimeout: opts.keepAliveTimeout ?? 4_000,
    connect: ((_opts: unknown, cb: (err: Error | null, socket: Socket | null) => void) => {
      const s = opts.tls === true ? tlsConnect({ port, host: '127.0.0.1', rejectUnauthorized: false }) : tcp(port, '127.0.0.1');
      opts.sockets?.push(s);
      s.once(opts.tls === true ? 'secureConnect' : 'connect', () => { void held.then(() => cb(null, s)); });
      s.once('error', (err) => cb(err, null));
    }) as never,
  });
}

/** One GET of `path`: resolves with "STATUS BODY", or "error MESSAGE". */
export function getThrough(upstream: FastUpstream, path: string): Promise<string> {
  return new Promise((resolve) => {
    let body = '';
    const handler: Dispatcher.DispatchHandler = {
      onRequestStart() {},
      onResponseStart(_c, status) { body += `${status} `; },
      onResponseData(_c, chunk) { body += chunk.toString(); },
      onResponseEnd() { resolve(body); },
      onResponseError(_c, err) { resolve(`error ${err.message}`); },
    };
    upstream.dispatch({ method: 'GET', path, headers: ['host', 'a'] } as never, handler);
  });
}
