import type { PoolConfig } from '../config/types.ts';
import type { EventBus } from '../events.ts';
import { Backend, type ChangeCause } from './backend.ts';
import { upstreamTlsKey } from './tls.ts';
import type { Balancer } from './balancer.ts';
import { createBalancer } from './balancers/index.ts';

/**
 * A named set of backends and the policy that spreads requests over them. Backups get
 * traffic only while no primary is available; with `panic`, a pool with nothing
 * available sends to every backend rather than refusing.
 */
export class Pool {
  readonly name: string;
  readonly config: PoolConfig;
  readonly backends: readonly Backend[];
  readonly byName: ReadonlyMap<string, Backend>;
  private readonly primary: Balancer;
  private readonly backup: Balancer;
  private readonly everyone: Balancer;
  private readonly bus: EventBus | null;

  constructor(config: PoolConfig, bus: EventBus | null, reuse?: ReadonlyMap<string, Backend>) {
    this.name = config.name;
    this.config = config;
    this.bus = bus;
    // Bound, not a closure: a closure made here would share this constructor's context,
    // `reuse` included, so each backend would keep the previous generation's backends
    // alive, and those theirs: a chain growing by one pool at every reload.
    const onChange: (b: Backend, reason: string, cause?: ChangeCause) => void = this.changed.bind(this);
    const dropped: Backend[] = [];
    this.backends = config.backends.map((bc) => {
      const old = reuse?.get(bc.name);
      if (old !== undefined && sameUpstream(old, config, bc)) {
        // Keep connections and health state; take the new weight and flags. An
        // operator's runtime weight lasts until a reload: this one.
        old.onChange = onChange;
        if (old.effectiveWeight === old.targetWeight) old.effectiveWeight = bc.weight;
        if (old.runtimeWeight !== null) dropped.push(old);
        old.runtimeWeight = null;
        old.config = bc;
        return old;
      }
      const b = new Backend(config, bc, onChange);
      // A new upstream for the same backend name: its counters go on from the old one's.
      if (old !== undefined) b.adoptRecord(old);
      return b;
    });
    this.backends.forEach((b, i) => (b.slot = i));
    this.byName = new Map(this.backends.map((b) => [b.name, b]));
    const primaries = this.backends.filter((b) => !b.config.backup);
    const backups = this.backends.filter((b) => b.config.backup);
    this.primary = createBalancer(config.balance, primaries);
    this.backup = createBalancer(config.balance, backups);
    // Panic mode ignores health: a balancer over everything, each counted as available.
    this.everyone = createBalancer(config.balance, this.backends.map(panicView));
    for (const b of dropped) {
      this.bus?.publish({ type: 'backend', pool: this.name, backend: b.name, state: b.state(), reason: 'reload: the runtime weight gives way to the configured one', weight: b.config.weight });
    }
  }

  /** The backend for the next request, or null when none is available. */
  pick(): Backend | null {
    const b = this.primary.pick() ?? this.backup.pick();
    if (b !== null || !this.config.panic) return b;
    const p = this.everyone.pick();
    return p === null ? null : (p as PanicView).backend;
  }

  /** True when pick() would find a backend without panic mode. */
  hasAvailable(): boolean {
    for (const b of this.backends) if (b.isAvailable()) return true;
    return false;
  }

  /** Active requests over all backends. */
  active(): number {
    let n = 0;
    for (const b of this.backends) n += b.active;
    return n;
  }

  private changed(backend: Backend, reason: string, cause?: ChangeCause): void {
    this.primary.rebuild();
    this.backup.rebuild();
    // The panic balancer reads effective weights too (slow start changes them).
    // rebuild() only marks it stale, so this costs nothing until panic needs it.
    this.everyone.rebuild();
    this.bus?.publish({ type: 'backend', pool: this.name, backend: backend.name, state: backend.state(), reason, ...cause });
  }

  /** Closes upstream connections of backends not in `keep`, after in-flight requests finish. */
  async close(keep?: ReadonlySet<Backend>): Promise<void> {
    await Promise.all(this.backends.filter((b) => !keep?.has(b)).map((b) => b.close()));
  }
}

function sameTimeouts(a: PoolConfig, b: PoolConfig): boolean {
  return a.connectTimeout === b.connectTimeout && a.responseTimeout === b.responseTimeout && a.idleTimeout === b.idleTimeout;
}

function sameUpstream(old: Backend, pool: PoolConfig, bc: PoolConfig['backends'][number]): boolean {
  return old.config.origin === bc.origin && old.config.maxConnections === bc.maxConnections
    && old.pool === pool.name && sameTimeouts(old.poolConfig, pool) && old.proxyVersion === (pool.proxyProtocol ?? null)
    // Upstream TLS is set on the connection pool when it is made: a change, or renewed
    // files, need a new one.
    && old.tlsKey === upstreamTlsKey(bc, pool.tls ?? null);
}

interface PanicView extends Backend { readonly backend: Backend }

// A stand-in that the panic balancer sees as always available but that keeps the real
// backend's weight and load.
function panicView(backend: Backend): Backend {
  const view = Object.create(backend) as PanicView & { backend: Backend };
  Object.defineProperty(view, 'backend', { value: backend });
  view.isAvailable = () => backend.effectiveWeight > 0 || backend.targetWeight > 0;
  return view;
}
