// Real Backend objects for balancer tests. A Backend makes its undici Pool at once but
// opens no connection until a request is sent, so these cost nothing; close() them.

import type { BackendConfig, PoolConfig } from '../../../src/config/types.ts';
import { Backend } from '../../../src/pool/backend.ts';
import type { Balancer, BalancerFactory } from '../../../src/pool/balancer.ts';

/** A backend config for a port nothing listens on; only name and weight matter here. */
export function backendConfig(name: string, weight: number, port = 9): BackendConfig {
  return {
    name,
    origin: `http://127.0.0.1:${port}`,
    protocol: 'http:',
    host: '127.0.0.1',
    port,
    weight,
    backup: false,
    maxConnections: 4,
  };
}

/** A pool config with defaults for everything the balancer does not read. */
export function poolConfig(backends: readonly BackendConfig[], balance: PoolConfig['balance'] = 'weighted-round-robin'): PoolConfig {
  return {
    name: 'test',
    balance,
    backends,
    hostHeader: 'preserve',
    healthCheck: null,
    outlier: null,
    connectTimeout: 1000,
    responseTimeout: 1000,
    idleTimeout: 1000,
    queueSize: 0,
    queueTimeout: 1000,
    retries: 0,
    retryBudgetPercent: 20,
    slowStart: 0,
    panic: false,
    sticky: null,
    debugHeaders: false,
  };
}

/**
 * Backends with these weights (named a, b, c… or b0, b1… past 26) and a balancer over
 * them that is rebuilt on every state change, as a Pool does.
 */
export class Harness {
  readonly backends: readonly Backend[];
  readonly byName: ReadonlyMap<string, Backend>;
  readonly balancer: Balancer;

  constructor(factory: BalancerFactory, weights: readonly number[]) {
    const configs = weights.map((w, i) => backendConfig(nameOf(i, weights.length), w));
    const pool = poolConfig(configs);
    const rebuild = (): void => this.balancer.rebuild();
    this.backends = configs.map((c) => new Backend(pool, c, rebuild));
    this.byName = new Map(this.backends.map((b) => [b.name, b]));
    this.balancer = factory(this.backends);
  }

  /** The backend called `name`. */
  get(name: string): Backend {
    const b = this.byName.get(name);
    if (b === undefined) throw new Error(`no backend ${name}`);
    return b;
  }

  /** Names of the next `n` picks ('-' for null). */
  sequence(n: number): string[] {
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.balancer.pick()?.name ?? '-');
    return out;
  }

  /** How many of the next `n` picks went to each backend (every backend listed, nulls as '-'). */
  counts(n: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const b of this.backends) out[b.name] = 0;
    for (let i = 0; i < n; i++) {
      const name = this.balancer.pick()?.name ?? '-';
      out[name] = (out[name] ?? 0) + 1;
    }
    return out;
  }

  /**
   * Picks `n` times, keeping every picked request in flight (active + 1) until all
   * `n` are picked, then finishes them all: a burst of concurrent requests.
   */
  burst(n: number): Record<string, number> {
    const picked: Backend[] = [];
    for (let i = 0; i < n; i++) {
      const b = this.balancer.pick();
      if (b === null) throw new Error('no backend picked');
      b.active++;
      picked.push(b);
    }
    const out: Record<string, number> = {};
    for (const b of this.backends) out[b.name] = 0;
    for (const b of picked) {
      b.active--;
      out[b.name]++;
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all(this.backends.map((b) => b.close()));
  }
}

function nameOf(i: number, n: number): string {
  return n <= 26 ? String.fromCharCode(97 + i) : `b${i}`;
}

/** Weighted counts expected over `picks` picks for these weights (names as Harness gives them). */
export function expectedSplit(weights: readonly number[], picks: number): Record<string, number> {
  const total = weights.reduce((s, w) => s + w, 0);
  const out: Record<string, number> = {};
  weights.forEach((w, i) => { out[nameOf(i, weights.length)] = (picks * w) / total; });
  return out;
}
