// Bearer-token check of the admin API. Both sides are hashed before comparing so that
// timingSafeEqual always sees 32 bytes: neither the token's content nor its length
// shows in the response time.

import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';

export class TokenCheck {
  private readonly expected: Buffer | null;

  /** `token` null: no token is configured and every request passes. */
  constructor(token: string | null) {
    this.expected = token === null ? null : digest(token);
  }

  /** True when no token is configured or `authorization` carries the right one. */
  allows(authorization: string | undefined): boolean {
    if (this.expected === null) return true;
    if (authorization === undefined) return false;
    const match = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    if (match === null) return false;
    return timingSafeEqual(digest(match[1]), this.expected);
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** True for addresses only this machine can reach: 127.0.0.0/8, ::1 and `localhost`. */
export function isLoopback(host: string): boolean {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (h === 'localhost') return true;
  const family = isIP(h);
  if (family === 4) return h.startsWith('127.');
  if (family === 6) {
    const lower = h.toLowerCase();
    return lower === '::1' || lower === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(lower);
  }
  return false;
}
