// What a reload changed: the top-level settings, and the listeners, routes, pools and
// backends added, removed or changed, by name. For the reload's log line and event;
// a reload runs rarely, so comparing serialised values is cheap enough.

import type { Config } from './types.ts';

export interface NamedChanges {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  readonly changed: readonly string[];
}

export interface ConfigChanges {
  /** Top-level keys whose value changed: workers, shutdownTimeout, trustedProxies, accessLog, log, admin, ha. */
  readonly settings: readonly string[];
  readonly listeners: NamedChanges;
  readonly routes: NamedChanges;
  readonly pools: NamedChanges;
  /** `pool/backend`, for pools in both configs. */
  readonly backends: NamedChanges;
}

const SETTINGS = ['workers', 'shutdownTimeout', 'trustedProxies', 'accessLog', 'log', 'admin', 'ha'] as const;

/** What `next` changes compared with `prev`. */
export function diffConfig(prev: Config, next: Config): ConfigChanges {
  const settings = SETTINGS.filter((k) => canon(prev[k]) !== canon(next[k]));
  const backends = { added: [] as string[], removed: [] as string[], changed: [] as string[] };
  for (const [name, pool] of next.pools) {
    const old = prev.pools.get(name);
    if (old === undefined) continue;
    const d = named(old.backends, pool.backends);
    backends.added.push(...d.added.map((b) => `${name}/${b}`));
    backends.removed.push(...d.removed.map((b) => `${name}/${b}`));
    backends.changed.push(...d.changed.map((b) => `${name}/${b}`));
  }
  return {
    settings,
    listeners: named(prev.listeners, next.listeners),
    routes: named(prev.routes, next.routes),
    pools: named([...prev.pools.values()], [...next.pools.values()]),
    backends,
  };
}

/** True when the reload changed nothing. */
export function unchanged(c: ConfigChanges): boolean {
  return c.settings.length === 0 && [c.listeners, c.routes, c.pools, c.backends].every((n) => n.added.length + n.removed.length + n.changed.length === 0);
}

/** One line for people: `pools web changed, api added; routes old removed; settings log`. */
export function describeChanges(c: ConfigChanges): string {
  if (unchanged(c)) return 'nothing changed';
  const parts: string[] = [];
  for (const [what, n] of [['listeners', c.listeners], ['routes', c.routes], ['pools', c.pools], ['backends', c.backends]] as const) {
    const bits = (['added', 'removed', 'changed'] as const).filter((k) => n[k].length > 0).map((k) => `${n[k].join(', ')} ${k}`);
    if (bits.length > 0) parts.push(`${what} ${bits.join(', ')}`);
  }
  if (c.settings.length > 0) parts.push(`settings ${c.settings.join(', ')}`);
  return parts.join('; ');
}

function named<T extends { readonly name: string }>(prev: readonly T[], next: readonly T[]): NamedChanges {
  const before = new Map(prev.map((x) => [x.name, canon(x)]));
  const after = new Set(next.map((x) => x.name));
  return {
    added: next.filter((x) => !before.has(x.name)).map((x) => x.name),
    removed: prev.filter((x) => !after.has(x.name)).map((x) => x.name),
    changed: next.filter((x) => before.has(x.name) && before.get(x.name) !== canon(x)).map((x) => x.name),
  };
}

/** A value as a string that two equal configs share (Maps as their entries). */
function canon(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => (v instanceof Map ? [...v.entries()] : v)) ?? 'undefined';
}
