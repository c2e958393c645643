import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { HeaderEditConfig, RedirectConfig, RouteConfig } from '../config/types.ts';
import { errors } from '../errors.ts';
import { answerError, writeRaw } from './own-answers.ts';
import { TrustedProxies, type ForwardContext } from './headers.ts';

// A route's actions, compiled once per config: who may use the route, whether it is
// answered with a redirect, how the path is rewritten and which headers are set or
// removed on the way. A route without actions has none of this object (null), so the
// request path pays one comparison for the feature.

/** A header edit laid out for the hot path: names to drop, and the flat [name, value, …] to add. */
class HeaderEdit {
  readonly drop: ReadonlySet<string>;
  readonly add: readonly string[];
  /** Lengths of the dropped names: a header of another length is kept without lower-casing it. */
  private readonly lengths: Uint8Array;

  constructor(config: HeaderEditConfig) {
    // A set header replaces what came in under that name.
    this.drop = new Set([...config.remove, ...config.set.map(([name]) => name)]);
    this.add = config.set.flat();
    this.lengths = new Uint8Array(256);
    for (const name of this.drop) this.lengths[Math.min(name.length, 255)] = 1;
  }

  /**
   * Applies the edit to a flat header array in place. `keepLast` keeps the final pair
   * (the upstream Host, which dispatch() may replace per backend) at the end.
   */
  apply(headers: string[], keepLast: boolean): void {
    const drop = this.drop;
    const lengths = this.lengths;
    const end = keepLast ? headers.length - 2 : headers.length;
    const lastName = keepLast ? headers[end] : '';
    const lastValue = keepLast ? headers[end + 1] : '';
    let w = 0;
    for (let r = 0; r < end; r += 2) {
      const name = headers[r];
      if (lengths[Math.min(name.length, 255)] === 1 && (drop.has(name) || drop.has(name.toLowerCase()))) continue;
      headers[w] = name;
      headers[w + 1] = headers[r + 1];
      w += 2;
    }
    // Written over the array rather than truncated and pushed: no new backing store
    // unless the rules add more than they drop.
    const add = this.add;
    for (let i = 0; i < add.length; i++) headers[w++] = add[i];
    if (keepLast) {
      headers[w++] = lastName;
      headers[w++] = lastValue;
    }
    if (headers.length > w) headers.length = w;
  }
}

/** What a route answered itself: the status, the body bytes sent, and the error code if it was one. */
export interface OwnAnswer {
  readonly status: number;
  readonly bytes: number;
  readonly error: string | null;
}

export class RouteActions {
  private readonly allow: TrustedProxies | null;
  private readonly redirect: RedirectConfig | null;
  private readonly stripPrefix: string | null;
  private readonly addPrefix: string | null;
  readonly request: HeaderEdit | null;
  readonly response: HeaderEdit | null;

  private constructor(route: RouteConfig) {
    this.allow = route.allow == null ? null : new TrustedProxies(route.allow);
    this.redirect = route.redirect ?? null;
    this.stripPrefix = route.rewrite?.stripPrefix ?? null;
    // A prefix ending in / would make `//` with every path.
    this.addPrefix = route.rewrite?.addPrefix?.replace(/\/+$/, '') ?? null;
    const h = route.headers ?? null;
    this.request = h === null || h.request.set.length + h.request.remove.length === 0 ? null : new HeaderEdit(h.request);
    this.response = h === null || h.response.set.length + h.response.remove.length === 0 ? null : new HeaderEdit(h.response);
  }

  /** The actions of `route`, or null when it has none. */
  static of(route: RouteConfig): RouteActions | null {
    if (route.allow == null && route.redirect == null && route.rewrite == null && route.headers == null) return null;
    return new RouteActions(route);
  }

  /** The client may not use this route. */
  refuses(ctx: ForwardContext): boolean {
    if (this.allow === null) return false;
    return !this.allow.trusts(ctx.clientAddress);
  }

  /**
   * Answers the request itself when the route says so (403 for a refused client, or the
   * redirect) and says what it sent; null when the request is to be forwarded.
   */
  answer(req: IncomingMessage, res: ServerResponse, ctx: ForwardContext, close: boolean, requestId: string): OwnAnswer | null {
    if (this.refuses(ctx)) {
      return { status: 403, bytes: answerError(req, res, errors.FORBIDDEN, '', close, requestId), error: errors.FORBIDDEN.code };
    }
    if (this.redirect === null) return null;
    const location = this.location(req, ctx);
    if (location === null) {
      return { status: 400, bytes: answerError(req, res, errors.BAD_REQUEST, '', close, requestId), error: errors.BAD_REQUEST.code };
    }
    res.writeHead(this.redirect.code, { location, 'content-length': 0, 'x-request-id': requestId, ...closing(close) });
    res.end();
    return { status: this.redirect.code, bytes: 0, error: null };
  }

  /** Where the redirect sends this request; null when the request names no host and the route none either. */
  location(req: IncomingMessage, ctx: ForwardContext): string | null {
    const r = this.redirect!;
    const scheme = r.scheme ?? ctx.proto;
    const given = req.headers.host ?? (req as { authority?: string }).authority ?? '';
    const split = splitHost(given);
    const host = r.host ?? split.name;
    if (host === '') return null;
    // The request's port is kept only when neither the scheme nor the host changes:
    // http://a:8080 → https://a, not https://a:8080.
    const port = r.port ?? (r.scheme === null && r.host === null ? split.port : null);
    const defaultPort = scheme === 'https' ? 443 : 80;
    const authority = port === null || port === defaultPort ? host : `${host}:${port}`;
    const url = req.url ?? '/';
    let target = url;
    if (r.path !== null) {
      const q = url.indexOf('?');
      target = q < 0 ? r.path : r.path + url.slice(q);
    }
    return `${scheme}://${authority}${target}`;
  }

  /** The path sent upstream: the prefix stripped (on a segment boundary) and/or added. */
  path(url: string): string {
    let out = url;
    const strip = this.stripPrefix;
    if (strip !== null && out.startsWith(strip)) {
      const next = out.charCodeAt(strip.length);
      // `/api` strips from /api, /api/x and /api?q, not from /apix.
      if (strip.endsWith('/') || Number.isNaN(next) || next === 47 /* / */ || next === 63 /* ? */) {
        out = out.slice(strip.length);
        if (out.charCodeAt(0) !== 47) out = '/' + out;
      }
    }
    if (this.addPrefix !== null) out = this.addPrefix + out;
    return out;
  }
}

function closing(close: boolean): Record<string, string> {
  return close ? { connection: 'close' } : {};
}

/** `name` and port of a Host header value (`[v6]:port`, `name:port`, `name`). */
function splitHost(value: string): { name: string; port: number | null } {
  const close = value.startsWith('[') ? value.indexOf(']') : -1;
  const colon = value.indexOf(':', close + 1);
  if (colon < 0) return { name: value.toLowerCase(), port: null };
  const port = Number(value.slice(colon + 1));
  return { name: value.slice(0, colon).toLowerCase(), port: Number.isInteger(port) && port > 0 ? port : null };
}

/** The 403 for a refused client on an upgrade request, written on the raw socket; returns the body bytes. */
export function refuseRaw(socket: Duplex, requestId: string): number {
  return writeRaw(socket, errors.FORBIDDEN, '', requestId);
}
