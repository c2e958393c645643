// Micro-benchmark of balancer.pick(): both policies, 3 and 1000 backends.
//   node bench/micro/pick.ts
// pick() must take the same time for 3 and 1000 backends and allocate nothing.

import type { BackendConfig, PoolConfig } from '../../src/config/types.ts';
import { Backend } from '../../src/pool/backend.ts';
import type { Balancer } from '../../src/pool/balancer.ts';
import { createBalancer } from '../../src/pool/balancers/index.ts';
import { EXACT_SCAN_LIMIT } from '../../src/pool/balancers/least-connections.ts';
import { bench, sink } from './measure.ts';

const OPS = 1_000_000;

function pool(balance: PoolConfig['balance'], backends: readonly BackendConfig[]): PoolConfig {
  return {
    name: 'bench', balance, backends, hostHeader: 'preserve', healthCheck: null, outlier: null,
    connectTimeout: 1000, responseTimeout: 1000, idleTimeout: 1000, queueSize: 0, queueTimeout: 1000, retries: 0, retryBudgetPercent: 20,
    slowStart: 0, panic: false, sticky: null, debugHeaders: false,
  };
}

function backends(balance: PoolConfig['balance'], n: number): Backend[] {
  // Backends make an undici Pool each but connect to nothing until a request is sent.
  const configs: BackendConfig[] = Array.from({ length: n }, (_, i) => ({
    name: `b${i}`, origin: `http://127.0.0.1:${10_000 + i}`, protocol: 'http:', host: '127.0.0.1',
    port: 10_000 + i, weight: 1 + (i % 4), backup: false, maxConnections: 4,
  }));
  const p = pool(balance, configs);
  return configs.map((c) => new Backend(p, c, () => {}));
}

const all: Backend[] = [];
console.log(`pick(), median of 5 rounds of ${OPS} picks (least-connections scans exactly up to ${EXACT_SCAN_LIMIT} backends)`);
for (const balance of ['weighted-round-robin', 'least-connections'] as const) {
  for (const n of [3, 1000]) {
    const list = backends(balance, n);
    all.push(...list);
    // Some load, so least-connections has something to compare.
    list.forEach((b, i) => { b.active = i % 5; });
    const balancer: Balancer = createBalancer(balance, list);
    bench(`${balance}, ${n} backends`, { ops: OPS }, (ops) => {
      let last = null;
      for (let i = 0; i < ops; i++) last = balancer.pick();
      sink.value = last;
    });
  }
}
await Promise.all(all.map((b) => b.close()));
