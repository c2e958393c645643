// A lease this node holds in etcd, as this node counts it: on its own monotonic clock,
// from when the last successful keep-alive was sent (never from when etcd answered),
// so it runs out here no later than on the server. When it runs out, `onExpire` is
// called once, and the store treats the lease as lost whatever etcd says later.

const now = (): number => performance.now();

export class OwnLease {
  readonly id: string;
  /** TTL in ms as etcd last granted or renewed it. */
  ttl: number;
  /** When the last successful keep-alive (or the grant) was sent. */
  confirmedAt: number;
  readonly takenAt: number;
  /** The elector confirmed it (first renew after its MASTER hook). */
  serving: boolean;
  /** A planned release is handing it over. */
  releasing: boolean;
  /** Until when an offer made to a preempting candidate stands. */
  offerUntil: number;
  /** Set while a preemption's offer waits for the holder to be ready to let the key go. */
  offering: boolean;
  private timer: NodeJS.Timeout | null;
  private readonly onExpire: () => void;

  constructor(id: string, ttlSeconds: number, sentAt: number, onExpire: () => void) {
    this.id = id;
    this.ttl = ttlSeconds * 1000;
    this.confirmedAt = sentAt;
    this.takenAt = sentAt;
    this.serving = false;
    this.releasing = false;
    this.offerUntil = 0;
    this.offering = false;
    this.timer = null;
    this.onExpire = onExpire;
    this.arm();
  }

  /** A keep-alive sent at `sentAt` renewed it for `ttlSeconds`. */
  confirm(sentAt: number, ttlSeconds: number): void {
    if (sentAt < this.confirmedAt) return;
    this.confirmedAt = sentAt;
    this.ttl = ttlSeconds * 1000;
    this.arm();
  }

  /** Milliseconds left at `t` on this node's clock; 0 or less: expired. */
  remaining(t = now()): number {
    return this.confirmedAt + this.ttl - t;
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(): void {
    this.stop();
    this.timer = setTimeout(() => {
      this.timer = null;
      this.onExpire();
    }, Math.max(0, this.remaining()) + 1);
  }
}
