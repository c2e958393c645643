// This node's presence in etcd: one lease that carries all its candidacy keys, kept
// alive every renew interval while the store runs. When this node stops (or dies, or is
// cut off from etcd for longer than the lease) its candidacies go with the lease, so the
// others stop waiting for it. A lease that ran out (a long pause of this process, or etcd
// away) is replaced, and the caller writes its candidacies again.

import { EtcdError, GRPC_NOT_FOUND, type EtcdClient } from './client.ts';
import { OwnLease } from './own-lease.ts';
import type { Logger } from '../../../log.ts';

const now = (): number => performance.now();

export class Presence {
  private readonly client: EtcdClient;
  private readonly ttlSeconds: number;
  private readonly retryEvery: number;
  private readonly log: Logger | undefined;
  private lease: OwnLease | null;
  private regranting: Promise<void> | null;
  private closed: boolean;
  /** Called when a new lease replaced a lost one: every candidacy must be written again. */
  onRenewed: () => void;

  constructor(client: EtcdClient, ttlSeconds: number, retryEvery: number, log: Logger | undefined) {
    this.client = client;
    this.ttlSeconds = ttlSeconds;
    this.retryEvery = retryEvery;
    this.log = log;
    this.lease = null;
    this.regranting = null;
    this.closed = false;
    this.onRenewed = () => {};
  }

  /** Grants the first lease; resolves with the TTL etcd granted (seconds). */
  async start(): Promise<number> {
    const t0 = now();
    const granted = await this.client.grant(this.ttlSeconds);
    this.lease = new OwnLease(granted.id, granted.ttl, t0, Infinity, () => void this.regrant());
    return granted.ttl;
  }

  /** Writes `key` under the presence lease (a new lease first, when the last one was lost). */
  async put(key: string, value: string): Promise<void> {
    if (this.lease === null || this.regranting !== null) await this.regranting;
    try {
      await this.client.put(key, value, this.lease!.id);
    } catch (err) {
      if (err instanceof EtcdError && err.code === GRPC_NOT_FOUND) void this.regrant();
      throw err;
    }
  }

  /** One keep-alive, sent without waiting for it. */
  keepAlive(): void {
    const lease = this.lease;
    if (lease === null || this.regranting !== null || this.closed) return;
    const t = now();
    void this.client.keepAlive(lease.id, Math.max(1, Math.floor(lease.ttl / 3))).then(
      (ttl) => (ttl === 0 ? void this.regrant() : lease.confirm(t, ttl)),
      (err: Error) => this.log?.warn({ err: err.message }, `ha etcd store: presence lease: ${err.message}`),
    );
  }

  /** Revokes the lease: every candidacy of this node is gone at once. */
  async close(timeout: number): Promise<void> {
    this.closed = true;
    this.lease?.stop();
    if (this.lease !== null) await this.client.revoke(this.lease.id, timeout).catch(() => {});
  }

  /** Stops keeping the lease alive without revoking it (a crash). */
  abandon(): void {
    this.closed = true;
    this.lease?.stop();
  }

  private regrant(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.lease?.stop();
    this.regranting ??= (async () => {
      while (!this.closed) {
        const t0 = now();
        try {
          const granted = await this.client.grant(this.ttlSeconds);
          this.lease = new OwnLease(granted.id, granted.ttl, t0, Infinity, () => void this.regrant());
          this.onRenewed();
          return;
        } catch (err) {
          this.log?.warn({ err: (err as Error).message }, `ha etcd store: presence lease: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, this.retryEvery));
        }
      }
    })().finally(() => {
      this.regranting = null;
    });
    return this.regranting;
  }
}
