// The in-process medium that the memory stores of several nodes share: records that
// live for a TTL on one clock and vanish when it runs out, created only if absent,
// rewritten only if unchanged since read (revisions), deleted, and watched by prefix.
// That is all a lease store may ask of its medium (src/ha/handover.ts decides the rest),
// so the memory store shows the election policy on the simplest medium there is.

import { systemClock, type Clock, type TimerHandle } from '../../clock.ts';

/** One record as read. */
export interface MemoryRecord<T> {
  readonly value: T;
  /** Revision of the write that made it; grows with every write to the medium. */
  readonly rev: number;
  /** Clock time it vanishes unless kept alive. */
  readonly expiresAt: number;
}

interface Slot {
  value: unknown;
  rev: number;
  expiresAt: number;
  timer: TimerHandle | null;
}

/** Records with TTLs on one clock, shared by every node in the process. */
export class MemoryMedium {
  readonly clock: Clock;
  private readonly slots: Map<string, Slot>;
  private readonly counters: Map<string, number>;
  private readonly watchers: Set<{ prefix: string; fn: (path: string) => void }>;
  private revision: number;

  constructor(clock: Clock = systemClock) {
    this.clock = clock;
    this.slots = new Map();
    this.counters = new Map();
    this.watchers = new Set();
    this.revision = 0;
  }

  get<T>(path: string): MemoryRecord<T> | null {
    const s = this.slots.get(path);
    return s === undefined ? null : { value: s.value as T, rev: s.rev, expiresAt: s.expiresAt };
  }

  /** The records under `prefix`, by path. */
  list<T>(prefix: string): Map<string, MemoryRecord<T>> {
    const out = new Map<string, MemoryRecord<T>>();
    for (const path of this.slots.keys()) if (path.startsWith(prefix)) out.set(path, this.get<T>(path)!);
    return out;
  }

  /** Creates `path` for `ttl` ms only if it is absent; the revision written, or 0. */
  create(path: string, value: unknown, ttl: number): number {
    if (this.slots.has(path)) return 0;
    return this.write(path, value, ttl);
  }

  /** Rewrites `path` only if it is still at revision `rev` (ttl: a new TTL, or null to keep it); the revision written, or 0. */
  replace(path: string, rev: number, value: unknown, ttl: number | null): number {
    const s = this.slots.get(path);
    if (s === undefined || s.rev !== rev) return 0;
    return this.write(path, value, ttl ?? s.expiresAt - this.clock.now());
  }

  /** Writes `path` whatever is there. */
  put(path: string, value: unknown, ttl: number): number {
    return this.write(path, value, ttl);
  }

  /** Extends `path` at revision `rev` by `ttl` ms from now; false when it is gone or changed. */
  keepAlive(path: string, rev: number, ttl: number): boolean {
    const s = this.slots.get(path);
    if (s === undefined || s.rev !== rev) return false;
    this.arm(path, s, ttl);
    return true;
  }

  /** Deletes `path` (only at revision `rev` when given); false when there was nothing to delete. */
  delete(path: string, rev?: number): boolean {
    const s = this.slots.get(path);
    if (s === undefined || (rev !== undefined && s.rev !== rev)) return false;
    if (s.timer !== null) this.clock.clearTimeout(s.timer);
    this.slots.delete(path);
    this.revision++;
    this.notify(path);
    return true;
  }

  /** Adds one to the counter at `path` (it never goes back, even when records vanish) and returns it. */
  next(path: string): number {
    const n = (this.counters.get(path) ?? 0) + 1;
    this.counters.set(path, n);
    return n;
  }

  /** Calls `fn` (asynchronously) with the path of every write, expiry or delete under `prefix`. */
  watch(prefix: string, fn: (path: string) => void): () => void {
    const w = { prefix, fn };
    this.watchers.add(w);
    return () => void this.watchers.delete(w);
  }

  private write(path: string, value: unknown, ttl: number): number {
    let s = this.slots.get(path);
    if (s === undefined) {
      s = { value, rev: 0, expiresAt: 0, timer: null };
      this.slots.set(path, s);
    }
    s.value = value;
    s.rev = ++this.revision;
    this.arm(path, s, ttl);
    this.notify(path);
    return s.rev;
  }

  private arm(path: string, s: Slot, ttl: number): void {
    if (s.timer !== null) this.clock.clearTimeout(s.timer);
    s.expiresAt = this.clock.now() + ttl;
    s.timer = this.clock.setTimeout(() => {
      s.timer = null;
      if (this.slots.get(path) === s) this.delete(path);
    }, Math.max(0, ttl));
  }

  private notify(path: string): void {
    for (const w of this.watchers) {
      if (!path.startsWith(w.prefix)) continue;
      // After the write that caused it, as a real medium's watch would deliver it.
      queueMicrotask(() => {
        if (this.watchers.has(w)) w.fn(path);
      });
    }
  }
}
