// A compiled config is never changed once made: the control plane and every data plane
// read it, a reload makes a new one. Freezing it makes that a guarantee (a write throws
// in strict mode) and lets the in-process channel hand the same object to a data plane
// that a worker gets as a structured-clone copy.

import type { Config } from './types.ts';

/** Freezes `config` deeply (objects, arrays, the values of Maps) and returns it. */
export function freezeConfig(config: Config): Config {
  freeze(config, new WeakSet());
  return config;
}

function freeze(value: unknown, seen: WeakSet<object>): void {
  if (typeof value !== 'object' || value === null || seen.has(value) || ArrayBuffer.isView(value)) return;
  seen.add(value);
  if (value instanceof Map) {
    for (const [k, v] of value) {
      freeze(k, seen);
      freeze(v, seen);
    }
  }
  Object.freeze(value);
  for (const v of Object.values(value)) freeze(v, seen);
}
