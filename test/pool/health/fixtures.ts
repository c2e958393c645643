// Shared bits of the health tests: check settings with short intervals, and a way to
// wait for a backend's state without sleeping longer than needed.

import type { HealthCheckConfig } from '../../../src/config/types.ts';
import type { BackendEvent, EventBus } from '../../../src/events.ts';

/** Health check settings for tests: /healthz every 50 ms, 200 ms timeout, rise 2, fall 3. */
export function healthCheck(overrides: Partial<HealthCheckConfig> = {}): HealthCheckConfig {
  return {
    path: '/healthz',
    method: 'GET',
    port: null,
    host: null,
    interval: 50,
    timeout: 200,
    rise: 2,
    fall: 3,
    expectStatus: [[200, 399]],
    expectBody: null,
    startUnhealthy: false,
    ...overrides,
  };
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls every 5 ms until `cond` holds; returns the ms waited, or throws after `limit` ms. */
export async function until(cond: () => boolean, limit: number, what = 'condition'): Promise<number> {
  const start = performance.now();
  while (!cond()) {
    if (performance.now() - start > limit) throw new Error(`${what} not met within ${limit}ms`);
    await sleep(5);
  }
  return performance.now() - start;
}

export interface SeenEvent extends BackendEvent {
  /** performance.now() when it was published. */
  readonly at: number;
}

/** Collects the backend events published on `bus`, in order, with their times. */
export function record(bus: EventBus): SeenEvent[] {
  const seen: SeenEvent[] = [];
  bus.on('event', (e) => {
    if (e.type === 'backend') seen.push({ ...e, at: performance.now() });
  });
  return seen;
}
