// Builds tandem YAML configs for tests from plain objects, with loopback listeners on
// port 0 and the admin API on port 0 unless a test says otherwise.

import { stringify } from 'yaml';

export interface BackendSpec { name: string; url: string; weight?: number; backup?: boolean; [k: string]: unknown }

/** One pool named `web`, one route to it, one listener; `extra` is merged over the top level. */
export function singlePool(backends: BackendSpec[], pool: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): string {
  return stringify({
    listeners: [{ name: 'web', address: '127.0.0.1:0' }],
    routes: [{ name: 'all', match: { pathPrefix: '/' }, pool: 'web' }],
    pools: { web: { backends, ...pool } },
    admin: { address: '127.0.0.1:0' },
    shutdownTimeout: '5s',
    // One worker unless a test asks for more: exact balancing splits need one balancer.
    workers: 1,
    ...extra,
  });
}

/** A whole config from parts, with the same defaults. */
export function config(parts: Record<string, unknown>): string {
  return stringify({
    listeners: [{ name: 'web', address: '127.0.0.1:0' }],
    admin: { address: '127.0.0.1:0' },
    shutdownTimeout: '5s',
    workers: 1,
    ...parts,
  });
}
