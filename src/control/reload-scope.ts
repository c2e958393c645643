// What a reload cannot apply. Everything else in a config takes effect on reload:
// listeners (kept ones in place, others bound anew beside the old), routes, pools and
// their backends (upstream connections anew where their address, limits, timeouts or
// TLS changed), health checks, trustedProxies, accessLog, shutdownTimeout, the number
// of worker processes (unless --workers fixed it) and the whole admin section (token, authReads, a new address is
// bound before the old one closes). What is left here needs a restart, so a reload that
// changes it is refused as a whole, naming each key, rather than answered "ok" while
// the change is ignored.

import type { Config } from '../config/types.ts';
import type { ReloadRequest } from '../events.ts';

export interface RunningShape {
  /** `--workers` fixed the number of workers (and whether the data plane runs in this process). */
  readonly workersFixed: boolean;
  /** HA runs (or would run) here: an `ha` section matters only with a node id. */
  readonly haRuns: boolean;
}

/** One `FILE: key: why` line per key that changed and needs a restart; empty when the reload may go on. */
export function restartOnly(running: Config, next: Config, shape: RunningShape): string[] {
  const out: string[] = [];
  const say = (key: string, why: string) => out.push(`${next.file}: ${key}: ${why}; restart tandem to change it (the running config is kept)`);
  // The file's workers (never 0: only --workers 0 runs the data plane in this process)
  // follow a reload, unless the command line fixed them.
  if (shape.workersFixed && running.workers !== next.workers) {
    say('workers', `${running.workers} to ${next.workers}, but --workers given at start fixes the number of worker processes`);
  }
  if (shape.haRuns) {
    const changed = differences(running.ha, next.ha, 'ha');
    // The lease store, the electors and their hooks are made once, at start.
    for (const key of changed.slice(0, 8)) say(key, 'the HA section is read at start only');
    if (changed.length > 8) say(`ha (${changed.length - 8} more keys)`, 'the HA section is read at start only');
  }
  return out;
}

/**
 * Key paths where two config values differ (`ha.vips[0].priority.lb1`), values never
 * shown: some are secrets (ha.secret, ha.etcd.auth).
 */
export function differences(a: unknown, b: unknown, path: string): string[] {
  if (Object.is(a, b)) return [];
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return [path];
    return a.flatMap((x, i) => differences(x, b[i], `${path}[${i}]`));
  }
  if (isRecord(a) && isRecord(b) && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) => differences(a[k], b[k], `${path}.${k}`));
  }
  return [path];
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !(x instanceof Map);
}

/** A reload under way: who asked, and when (performance.now()). */
export type ReloadRun = ReloadRequest & { readonly started: number };

/** What a reload's event says of who asked and how long it took. */
export function finished({ started, ...request }: ReloadRun): ReloadRequest & { durationMs: number } {
  return { ...request, durationMs: Math.round(performance.now() - started) };
}
