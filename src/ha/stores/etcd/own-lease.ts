// A lease this node holds in etcd, as this node counts it: on its own monotonic clock,
// from when the last successful keep-alive was sent (never from when etcd answered),
// so it runs out here no later than on the server; and no later than a lease duration
// after the last successful write of the VIP key was sent (a "beat"), because the other
// nodes take a key over once they have seen no write of it for a lease duration (see
// store.ts). When it runs out, `onExpire` is called once, and the store treats the
// lease as lost whatever etcd says later.

const now = (): number => performance.now();

export class OwnLease {
  readonly id: string;
  /** TTL in ms as etcd last granted or renewed it. */
  ttl: number;
  /** When the last successful keep-alive (or the grant) was sent. */
  confirmedAt: number;
  /** When the last successful write of the VIP key under this lease was sent. */
  beatAt: number;
  /** How long after a beat the others may take the key over: the lease duration (ms). */
  private readonly window: number;
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

  constructor(id: string, ttlSeconds: number, sentAt: number, window: number, onExpire: () => void) {
    this.id = id;
    this.ttl = ttlSeconds * 1000;
    this.confirmedAt = sentAt;
    this.beatAt = sentAt;
    this.window = window;
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

  /** A write of the VIP key under this lease, sent at `sentAt`, succeeded. */
  beat(sentAt: number): void {
    if (sentAt <= this.beatAt) return;
    this.beatAt = sentAt;
    this.arm();
  }

  /** Milliseconds left at `t` on this node's clock; 0 or less: expired. */
  remaining(t = now()): number {
    return Math.min(this.confirmedAt + this.ttl, this.beatAt + this.window) - t;
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
