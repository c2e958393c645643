import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants, createBrotliCompress, createGzip, type BrotliCompress, type Gzip } from 'node:zlib';
import type { Dispatcher } from 'undici';
import type { CompressConfig } from '../config/types.ts';
import { writeResumed, writeStalled } from './send-timeout.ts';

// Response compression for routes with `compress` (Traefik's `compress` middleware):
// gzip or brotli, negotiated from the client's Accept-Encoding, for the media types the
// route lists. A response goes as the backend sent it when it is already encoded, marked
// `Cache-Control: no-transform`, an answer to HEAD, a 204, 304 or 206, an answer to a
// Range request, shorter than `minSize` by its Content-Length, of no or another media
// type, or an event stream (compressing it would hold events back). A compressed response
// loses its Content-Length (it is sent chunked, or as HTTP/2 DATA frames) and a strong
// ETag becomes weak (the bytes differ; the meaning does not). Routes without `compress`
// never reach this module: the request path checks one field for null.

export type Encoder = Gzip | BrotliCompress;

/** Brotli's quality 11 default costs ~20x gzip's CPU; 5 compresses better than gzip at about its cost. */
const BROTLI_QUALITY = 5;
/** A 256 KiB window instead of 4 MiB: the encoder's memory is per response in flight. */
const BROTLI_WINDOW = 18;

/** Which responses of one route are compressed. Built once per config. */
export class Compressor {
  private readonly exact: ReadonlySet<string>;
  /** `text/` for `text/*`. */
  private readonly prefixes: readonly string[];
  private readonly minSize: number;

  constructor(config: CompressConfig) {
    this.exact = new Set(config.types.filter((t) => !t.endsWith('/*')));
    this.prefixes = config.types.filter((t) => t.endsWith('/*')).map((t) => t.slice(0, -1));
    this.minSize = config.minSize;
  }

  static of(config: CompressConfig | null | undefined): Compressor | null {
    return config == null ? null : new Compressor(config);
  }

  /**
   * The encoder for this response, with `out` (its headers for writeHead) edited to
   * match; null: the response goes as it came.
   */
  start(req: IncomingMessage, status: number, headers: Record<string, string | string[] | undefined>, out: string[]): Encoder | null {
    if (status === 204 || status === 304 || status === 206 || req.method === 'HEAD') return null;
    const encoded = headers['content-encoding'];
    if (encoded !== undefined && encoded !== 'identity') return null;
    if (headers['content-range'] !== undefined || !this.fits(headers['content-type'])) return null;
    const cacheControl = headers['cache-control'];
    if (cacheControl !== undefined && /(^|[\s,])no-transform\b/i.test(String(cacheControl))) return null;
    // From here, what the client gets depends on its Accept-Encoding: caches must know.
    addVary(out);
    if (req.headers.range !== undefined) return null;
    const length = headers['content-length'];
    if (length !== undefined && (length === '0' || Number(length) < this.minSize)) return null;
    const coding = negotiate(req.headers['accept-encoding']);
    if (coding === null) return null;
    editHeaders(out, coding);
    if (coding === 'gzip') return createGzip();
    const params: Record<number, number> = { [constants.BROTLI_PARAM_QUALITY]: BROTLI_QUALITY, [constants.BROTLI_PARAM_LGWIN]: BROTLI_WINDOW };
    if (length !== undefined) params[constants.BROTLI_PARAM_SIZE_HINT] = Number(length);
    return createBrotliCompress({ params });
  }

  private fits(type: string | string[] | undefined): boolean {
    if (typeof type !== 'string') return false;
    const semi = type.indexOf(';');
    const media = (semi < 0 ? type : type.slice(0, semi)).trim().toLowerCase();
    if (media === 'text/event-stream') return false;
    if (this.exact.has(media)) return true;
    for (const p of this.prefixes) if (media.startsWith(p)) return true;
    return false;
  }
}

/**
 * The coding to answer with for this Accept-Encoding (RFC 9110 §12.5.3): the one with the
 * highest q-value among br and gzip (`*` stands for those not named; br wins a tie),
 * unless it is 0 or identity is named with a higher one. No header: identity.
 */
export function negotiate(accept: string | undefined): 'br' | 'gzip' | null {
  if (accept === undefined || accept === '') return null;
  let br = -1;
  let gzip = -1;
  let identity = -1;
  let star = -1;
  for (const part of accept.split(',')) {
    const semi = part.indexOf(';');
    const coding = (semi < 0 ? part : part.slice(0, semi)).trim().toLowerCase();
    let q = 1;
    if (semi >= 0) {
      const m = /(?:^|;)\s*q\s*=\s*([0-9.]+)/i.exec(part.slice(semi));
      q = m === null ? 1 : Math.min(1, Number(m[1]));
      if (Number.isNaN(q)) q = 0;
    }
    if (coding === 'br') br = Math.max(br, q);
    else if (coding === 'gzip' || coding === 'x-gzip') gzip = Math.max(gzip, q);
    else if (coding === 'identity') identity = Math.max(identity, q);
    else if (coding === '*') star = Math.max(star, q);
  }
  if (br < 0) br = Math.max(star, 0);
  if (gzip < 0) gzip = Math.max(star, 0);
  // identity is always acceptable; it wins only when named with a higher q than either.
  const best = Math.max(br, gzip);
  if (best <= 0 || identity > best) return null;
  return br >= gzip ? 'br' : 'gzip';
}

function addVary(out: string[]): void {
  for (let i = 0; i < out.length; i += 2) {
    if (out[i] !== 'vary') continue;
    if (/(^|,)\s*(accept-encoding|\*)\s*(,|$)/i.test(out[i + 1])) return;
    out[i + 1] = `${out[i + 1]}, Accept-Encoding`;
    return;
  }
  out.push('vary', 'Accept-Encoding');
}

function editHeaders(out: string[], coding: 'br' | 'gzip'): void {
  for (let i = out.length - 2; i >= 0; i -= 2) {
    const name = out[i];
    if (name === 'content-length' || name === 'content-encoding') out.splice(i, 2);
    else if (name === 'etag' && out[i + 1].startsWith('"')) out[i + 1] = `W/${out[i + 1]}`;
  }
  out.push('content-encoding', coding);
}

/** What relaying through an encoder needs of the proxied request (forward.ts's ProxyRequest). */
export interface EncodedExchange {
  readonly res: ServerResponse;
  readonly encoder: Encoder | null;
  readonly controller: Dispatcher.DispatchController | null;
  bytes: number;
  finish(): void;
}

/**
 * Sends the encoder's output to the client with backpressure (pipe), counting the bytes
 * the client gets; the exchange finishes when the encoder has flushed its last bytes.
 */
export function relayEncoded(p: EncodedExchange): void {
  const encoder = p.encoder!;
  encoder.on('data', (chunk: Buffer) => { p.bytes += chunk.length; });
  encoder.pipe(p.res);
  encoder.once('end', () => p.finish());
  encoder.on('drain', () => {
    writeResumed(p.res);
    p.controller?.resume();
  });
  encoder.once('error', (err) => p.res.destroy(err));
}

/** Writes a chunk of the backend's body into the encoder; a full encoder pauses the backend, as a full socket does. */
export function writeEncoded(p: EncodedExchange, controller: Dispatcher.DispatchController, chunk: Buffer, sendTimeout: number): void {
  if (p.encoder!.write(chunk)) return;
  controller.pause();
  writeStalled(p.res, sendTimeout);
}
