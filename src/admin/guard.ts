// Who may use the admin API. With a token, a request that carries it may do anything.
// Without one (the loopback-only default), a web page in the operator's browser could
// otherwise drive the API: a form posted to 127.0.0.1:9901, or a page on a name of the
// attacker's that it re-points at 127.0.0.1 (DNS rebinding). So a request without the
// token is served only when its Host names the admin address (or a loopback literal),
// it carries no foreign Origin, and, if it changes something, it says
// `Content-Type: application/json`, which no form or simple cross-site request can.
// Wrong tokens are rate-limited per client address, so guessing one is slow.

import type { FastifyRequest } from 'fastify';
import { isIP } from 'node:net';
import { errors, type ErrorSpec } from '../errors.ts';
import { RateLimiter } from '../dataplane/rate-limit.ts';
import { isLoopback, TokenCheck } from './auth.ts';

/** Wrong tokens allowed per client address: a burst of 10, then one every 6 s. */
const WRONG_TOKENS = { requests: 10, per: 60_000, burst: 10, clients: 10_000 };

export type Verdict =
  | { readonly ok: true; readonly authenticated: boolean }
  | { readonly ok: false; readonly error: ErrorSpec; readonly retryAfter?: number };

export class AdminGuard {
  private tokens: TokenCheck;
  private hasToken: boolean;
  private authReads: boolean;
  /** Host names a request without the token may use; null: any (a wildcard bind, which needs a token). */
  private hosts: ReadonlySet<string> | null;
  private readonly wrong: RateLimiter;

  constructor(opts: { host: string; token: string | null; authReads: boolean }) {
    this.tokens = new TokenCheck(opts.token);
    this.hasToken = false;
    this.authReads = false;
    this.hosts = null;
    this.wrong = new RateLimiter(WRONG_TOKENS);
    this.update(opts);
  }

  /** A reload's admin section: from the next request on, only its token (and rules) count. */
  update(opts: { host: string; token: string | null; authReads: boolean }): void {
    this.tokens = new TokenCheck(opts.token);
    this.hasToken = opts.token !== null;
    this.authReads = opts.authReads;
    const bound = opts.host.toLowerCase();
    const wildcard = bound === '0.0.0.0' || bound === '::' || bound === '';
    this.hosts = wildcard ? null : new Set([bare(bound), ...(isLoopback(bound) ? ['localhost', '127.0.0.1', '::1'] : [])]);
  }

  /** `open`: a path anyone may read (probes, the page's static files). */
  check(req: FastifyRequest, open: boolean): Verdict {
    const mutating = req.method !== 'GET' && req.method !== 'HEAD';
    const client = req.socket.remoteAddress ?? '';
    const authorization = req.headers.authorization;
    if (this.hasToken && authorization !== undefined) {
      const locked = this.wrong.wait(client);
      if (locked > 0) return { ok: false, error: errors.ADMIN_RATE_LIMITED, retryAfter: locked };
      if (this.tokens.allows(authorization)) return { ok: true, authenticated: true };
      const wait = this.wrong.take(client);
      return wait > 0 ? { ok: false, error: errors.ADMIN_RATE_LIMITED, retryAfter: wait } : { ok: false, error: errors.ADMIN_UNAUTHORIZED };
    }
    if (open && !mutating) return { ok: true, authenticated: false };
    if (this.hasToken && (mutating || this.authReads)) return { ok: false, error: errors.ADMIN_UNAUTHORIZED };
    // No token here: only a request that cannot have come from a foreign page.
    if (!this.allowedHost(req.headers.host) || !this.sameOrigin(req.headers.origin)) return { ok: false, error: errors.ADMIN_FORBIDDEN };
    if (mutating && !isJson(req.headers['content-type'])) return { ok: false, error: errors.ADMIN_FORBIDDEN };
    return { ok: true, authenticated: false };
  }

  private allowedHost(host: string | undefined): boolean {
    if (this.hosts === null) return true;
    if (host === undefined) return false;
    return this.hosts.has(hostName(host.toLowerCase()));
  }

  private sameOrigin(origin: string | undefined): boolean {
    if (origin === undefined) return true;
    try {
      const u = new URL(origin);
      return u.protocol === 'http:' && this.allowedHost(u.host);
    } catch {
      return false;
    }
  }
}

/** The host part of a Host header value (`[::1]:9901` → `::1`). */
function hostName(host: string): string {
  if (host.startsWith('[')) {
    const end = host.indexOf(']');
    return end < 0 ? host : host.slice(1, end);
  }
  const colon = host.lastIndexOf(':');
  return colon < 0 || isIP(host) === 6 ? host : host.slice(0, colon);
}

function bare(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

function isJson(type: string | undefined): boolean {
  return type !== undefined && /^application\/json\s*(;|$)/i.test(type);
}
