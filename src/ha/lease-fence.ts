// The sidecar's own clock on its proxy's leases. Each event-stream ping says how long
// every VIP the proxy holds has left of its lease, counted from its last confirmed
// renewal; the agent removes a VIP when that runs out with no newer word, a guard
// before the lease could end anywhere else, so a proxy that freezes (SIGSTOP, a stalled
// host) never leaves its VIP up while the next holder adds it. A silent stream alone
// would take a whole lease to notice.

export class LeaseFence {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly guard: () => number;
  private readonly expired: (vip: string) => void;

  /**
   * @param guard ms before the lease's end to act, so the removal is done by then
   * @param expired called once when a VIP's lease runs out with no newer word
   */
  constructor(guard: () => number, expired: (vip: string) => void) {
    this.guard = guard;
    this.expired = expired;
  }

  /** The proxy says `vip` has `remaining` ms of lease left, as of now. */
  heard(vip: string, remaining: number): void {
    this.clear(vip);
    const t = setTimeout(() => {
      this.timers.delete(vip);
      this.expired(vip);
    }, Math.max(0, remaining - this.guard()));
    this.timers.set(vip, t);
  }

  /** No lease to watch for `vip` (not held, or the proxy said nothing of it). */
  clear(vip: string): void {
    const t = this.timers.get(vip);
    if (t !== undefined) clearTimeout(t);
    this.timers.delete(vip);
  }

  clearAll(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }
}

/** The `leases` of a ping's data: VIP name → ms left; empty when absent or malformed. */
export function pingLeases(data: string): Map<string, number> {
  const out = new Map<string, number>();
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    return out;
  }
  const leases = (parsed as { leases?: unknown } | null)?.leases;
  if (typeof leases !== 'object' || leases === null) return out;
  for (const [vip, ms] of Object.entries(leases)) if (typeof ms === 'number' && Number.isFinite(ms) && ms > 0) out.set(vip, ms);
  return out;
}
