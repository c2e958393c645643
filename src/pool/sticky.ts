import { createHmac } from 'node:crypto';
import type { Backend } from './backend.ts';
import type { Pool } from './pool.ts';

/** Environment variable with an optional secret mixed into sticky cookie ids. */
export const STICKY_KEY_ENV = 'TANDEM_STICKY_KEY';
/** base64url characters kept of the HMAC: 22 characters, 132 bits. */
const ID_LENGTH = 22;

/**
 * Sticky sessions by cookie for one pool. The cookie names a backend by an opaque id:
 * HMAC-SHA256 of the pool and backend names, under a key derived from the cookie name,
 * the pool name and an optional secret (`TANDEM_STICKY_KEY`, the same on every
 * instance). So two tandem instances with the same config and secret give a backend
 * the same id without talking to each other, and a client keeps its backend across a
 * VIP failover. The id never contains the backend's address or name. Without a
 * secret, someone who can guess backend names can compute the ids; set the secret
 * when that matters.
 *
 * Ids and Set-Cookie values are computed once per pool, so a request costs one scan of
 * the Cookie header and one Map lookup.
 */
export class Sticky {
  /** The cookie name. */
  readonly cookie: string;
  private readonly needle: string;
  private readonly byId = new Map<string, Backend>();
  private readonly setCookies = new Map<Backend, string>();
  private readonly secureSetCookies = new Map<Backend, string>();

  constructor(pool: Pool, secret: string = process.env[STICKY_KEY_ENV] ?? '') {
    const cfg = pool.config.sticky;
    if (cfg === null) throw new TypeError(`pool ${pool.name} has no sticky settings`);
    this.cookie = cfg.cookie;
    this.needle = cfg.cookie + '=';
    const key = createHmac('sha256', secret).update(`tandem-sticky-v1\0${cfg.cookie}\0${pool.name}`).digest();
    // Whole seconds; a ttl under one second makes a session cookie.
    const maxAge = Math.floor(cfg.ttl / 1000);
    const attrs = (maxAge > 0 ? `; Max-Age=${maxAge}` : '') + '; Path=/; HttpOnly; SameSite=Lax';
    for (const b of pool.backends) {
      const id = createHmac('sha256', key).update(`${pool.name}\0${b.name}`).digest('base64url').slice(0, ID_LENGTH);
      this.byId.set(id, b);
      this.setCookies.set(b, `${cfg.cookie}=${id}${attrs}`);
      this.secureSetCookies.set(b, `${cfg.cookie}=${id}${attrs}; Secure`);
    }
  }

  /** The backend the request's cookie names, if it is available now; else null. */
  lookup(cookieHeader: string | undefined): Backend | null {
    if (cookieHeader === undefined) return null;
    const id = cookieValue(cookieHeader, this.needle);
    if (id === null) return null;
    const b = this.byId.get(id);
    return b !== undefined && b.isAvailable() ? b : null;
  }

  /** The Set-Cookie value that sends later requests to `backend`; `secure` adds `Secure` (TLS listeners). */
  setCookie(backend: Backend, secure = false): string {
    const v = (secure ? this.secureSetCookies : this.setCookies).get(backend);
    if (v === undefined) throw new TypeError(`backend ${backend.name} is not in pool ${backend.pool}`);
    return v;
  }
}

/**
 * The value of cookie `needle` (`NAME=`) in a Cookie header, or null. A plain indexOf
 * scan: no regex and no split of the whole header on the hot path.
 */
export function cookieValue(header: string, needle: string): string | null {
  let from = 0;
  for (;;) {
    const at = header.indexOf(needle, from);
    if (at < 0) return null;
    // Only a match at the start of a pair counts: `xNAME=` is another cookie.
    const before = at === 0 ? 32 : header.charCodeAt(at - 1);
    if (before === 32 /* space */ || before === 59 /* ; */ || before === 9 /* tab */) {
      let start = at + needle.length;
      let end = header.indexOf(';', start);
      if (end < 0) end = header.length;
      while (end > start && header.charCodeAt(end - 1) <= 32) end--;
      if (end - start >= 2 && header.charCodeAt(start) === 34 && header.charCodeAt(end - 1) === 34) {
        start++;
        end--;
      }
      return header.slice(start, end);
    }
    from = at + 1;
  }
}
