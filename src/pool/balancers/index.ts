import type { PoolConfig } from '../../config/types.ts';
import type { Backend } from '../backend.ts';
import type { Balancer } from '../balancer.ts';
import { LeastConnections } from './least-connections.ts';
import { SmoothWeightedRoundRobin } from './smooth-weighted-round-robin.ts';

/** The balancer for a pool's `balance` policy, over these backends. */
export function createBalancer(kind: PoolConfig['balance'], backends: readonly Backend[]): Balancer {
  switch (kind) {
    case 'weighted-round-robin':
      return new SmoothWeightedRoundRobin(backends);
    case 'least-connections':
      return new LeastConnections(backends);
    default: {
      // Config validation rejects other values; this keeps a new policy from being
      // forgotten here when the union grows.
      const unknown: never = kind;
      throw new TypeError(`unknown balance policy ${String(unknown)}`);
    }
  }
}

export { LeastConnections, SmoothWeightedRoundRobin };
