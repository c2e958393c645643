import type { Backend } from './backend.ts';

/**
 * Chooses a backend for the next request. Implementations live in ./balancers/ and all
 * pass the contract suite in test/pool/balancers/contract.ts.
 */
export interface Balancer {
  /** An available backend, or null when none is. Runs per request: allocates nothing. */
  pick(): Backend | null;
  /** Availability or effective weights changed; recompute what pick() reads. Not per request. */
  rebuild(): void;
}

export type BalancerFactory = (backends: readonly Backend[]) => Balancer;
