import type { RateLimitConfig } from '../config/types.ts';

// A token bucket per client address for a route's `rateLimit`. The buckets live in one
// Map kept in least-recently-seen order (a hit moves its key to the end), so when more
// than `clients` addresses are tracked the one seen longest ago is dropped first:
// memory stays bounded whatever the number of addresses a flood comes from. A dropped
// address starts again with a full bucket, as one that was idle that long would have.

interface Bucket {
  tokens: number;
  /** performance.now() of the last refill. */
  at: number;
}

export class RateLimiter {
  private readonly buckets: Map<string, Bucket>;
  /** Tokens added per millisecond. */
  private readonly rate: number;
  private readonly burst: number;
  private readonly clients: number;

  constructor(config: RateLimitConfig) {
    this.buckets = new Map();
    this.rate = config.requests / config.per;
    this.burst = config.burst;
    this.clients = config.clients;
  }

  /**
   * Takes one token for `client`. Returns 0 when the request may go on, else the whole
   * seconds until a token is due (for Retry-After).
   */
  take(client: string, now = performance.now()): number {
    const buckets = this.buckets;
    let b = buckets.get(client);
    if (b === undefined) {
      b = { tokens: this.burst, at: now };
      if (buckets.size >= this.clients) buckets.delete(buckets.keys().next().value!);
    } else {
      buckets.delete(client);
      b.tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.rate);
      b.at = now;
    }
    buckets.set(client, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.rate / 1000));
  }

  /** Seconds until `client` has a token (0: it has one now), without taking it. */
  wait(client: string, now = performance.now()): number {
    const b = this.buckets.get(client);
    if (b === undefined) return 0;
    const tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.rate);
    return tokens >= 1 ? 0 : Math.max(1, Math.ceil((1 - tokens) / this.rate / 1000));
  }

  /** Client addresses tracked now. */
  get size(): number {
    return this.buckets.size;
  }
}
