// Where leadership lives. One lease per VIP (the key); a store keeps who holds it, the
// fencing epoch and how long it has left. The elector (elector.ts) drives a store
// through these four calls and nothing else, so the embedded `peer` store
// (stores/peer/), the quorum store on etcd (stores/etcd/) and the in-process `memory`
// store (stores/memory/) are interchangeable; all run the contract suite in
// test/ha/lease-store.contract.ts. Who takes a key and when is not a store's choice:
// every store applies candidates.ts and handover.ts.
//
// How the calls map onto etcd, to keep the interface honest: acquire is a transaction
// that creates the key with a server-side lease (or rewrites it when it is offered to
// the caller), renew is a lease keep-alive (the first one also marks the value
// `serving`), release deletes the key or writes an offer into it, watch is an etcd watch
// on the key whose revisions order the views. Candidacy (who would take the lease next,
// at which priority) lives in sibling keys with their own short leases.

/** One lease as a node sees it at one moment. */
export interface Lease {
  /** The VIP name. */
  readonly key: string;
  /** Node holding the lease; null when free (never taken, expired or released). */
  readonly holder: string | null;
  /**
   * Fencing token: grows by one on every change of holder (and on the winner of a
   * split brain, see stores/peer) and never goes back. Zero before the first holder.
   */
  readonly epoch: number;
  /** The holder's priority for this key; 0 when free. */
  readonly priority: number;
  /**
   * Milliseconds until the lease expires, counted on the observing node's own monotonic
   * clock when this view was made (never compared with another host's clock); 0 when free.
   */
  readonly remaining: number;
  /**
   * The holder confirmed it serves the key: it renewed at least once after acquiring,
   * which the elector does only after its MASTER hook succeeded. A previous holder that
   * handed the lease over keeps the VIP until this turns true (make-before-break).
   */
  readonly serving: boolean;
  /** Node the holder offers the lease to in a planned handover; null: none. */
  readonly offeredTo: string | null;
}

/** What a node says about itself when it competes for a key. */
export interface Claim {
  readonly node: string;
  /** This node's priority for the key; higher wins, ties go to the smaller node id. */
  readonly priority: number;
  /**
   * Ask a live holder of lower priority to hand the lease over (preemption). The elector
   * sets it only after the node has been ready for the VIP's preempt delay.
   */
  readonly preempt: boolean;
}

/**
 * The lease store contract. A node competes for a key by calling `acquire` at least
 * every renew interval while it wants the lease; a store may treat a candidate that has
 * not called for a lease duration as gone. Calls never block on a peer for long: a
 * handover that needs the holder's cooperation is requested by `acquire` and completed
 * by a later `acquire` once `watch` shows the offer.
 */
export interface LeaseStore {
  /**
   * Takes the lease for `claim.node` when it is free and this node is the best ready
   * candidate, or when it is offered to this node; with `preempt`, asks a lower-priority
   * holder for it. Resolves with the lease as it now is: holder === claim.node on success,
   * with `serving` false until the first renew.
   */
  acquire(key: string, claim: Claim): Promise<Lease>;
  /**
   * Extends the lease of `node` by a full lease duration and marks it serving. Resolves
   * with the lease (holder !== node when it was lost); rejects when the renewal could not
   * be made at all (store unreachable), which the elector counts as doubt.
   */
  renew(key: string, node: string): Promise<Lease>;
  /**
   * Gives the lease up, or withdraws the candidacy when `node` does not hold it. A holder
   * first offers the lease to the best ready candidate and resolves once that candidate
   * serves (or the offer timed out); without one it stops advertising and releases at
   * once, so the others need not wait for the lease to run out.
   */
  release(key: string, node: string): Promise<void>;
  /**
   * Calls `listener` with the current view at once (asynchronously) and after every change
   * of holder, epoch, serving, offer, or expiry. Returns the function that stops it.
   */
  watch(key: string, listener: (lease: Lease) => void): () => void;
}

/** The view of a key nobody holds at `epoch`. */
export function freeLease(key: string, epoch: number): Lease {
  return { key, holder: null, epoch, priority: 0, remaining: 0, serving: false, offeredTo: null };
}

/**
 * The body of `watch` for a store that keeps a set of listeners per key: adds `listener`,
 * calls it with `view()` once, asynchronously, and returns the function that removes it.
 */
export function subscribe(listeners: Set<(lease: Lease) => void>, listener: (lease: Lease) => void, view: () => Lease): () => void {
  listeners.add(listener);
  queueMicrotask(() => {
    if (listeners.has(listener)) listener(view());
  });
  return () => void listeners.delete(listener);
}

/**
 * Sends `lease` to a key's listeners when its holder, epoch, serving or offer changed
 * since the last view sent (not for time left alone); false when nothing changed.
 * Delivered after the current step, so a listener that calls back into the store never
 * sees it half-updated.
 */
export function publishView(key: { readonly listeners: Set<(lease: Lease) => void>; lastSignature: string }, lease: Lease): boolean {
  const signature = `${lease.holder}|${lease.epoch}|${lease.serving}|${lease.offeredTo}`;
  if (signature === key.lastSignature) return false;
  key.lastSignature = signature;
  if (key.listeners.size > 0) {
    queueMicrotask(() => {
      for (const l of key.listeners) l(lease);
    });
  }
  return true;
}
