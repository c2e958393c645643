// Who should hold a key: the one order of candidates that every lease store applies.
// A store only says who is present and at which priority (peer: adverts heard within a
// lease; etcd and memory: candidacy keys bound to a presence lease); the choice is made
// here, so two stores can never disagree on who wins.

/** A node that competes for a key, as a store sees it. */
export interface Candidate {
  readonly node: string;
  /** Its priority for the key; 0: present but not ready, never chosen. */
  readonly priority: number;
  /** It asks a lower-priority holder for the key (see Claim.preempt). */
  readonly preempt: boolean;
}

/** True when candidate a (priority, id) beats b: higher priority first, then the smaller node id. */
export function outranks(aPriority: number, aNode: string, bPriority: number, bNode: string): boolean {
  if (aPriority !== bPriority) return aPriority > bPriority;
  return aNode < bNode;
}

/**
 * The candidate other than `self` that outranks (`priority`, `self`) and passes `accept`,
 * best first; null when none. Priority 0 means not ready and never counts.
 */
export function bestCandidate(candidates: Iterable<Candidate>, self: string, priority: number, accept: (c: Candidate) => boolean = () => true): string | null {
  let best = self;
  let bestPriority = priority;
  for (const c of candidates) {
    if (c.node === self || c.priority <= 0 || !accept(c)) continue;
    if (outranks(c.priority, c.node, bestPriority, best)) {
      best = c.node;
      bestPriority = c.priority;
    }
  }
  return best === self ? null : best;
}

/** The candidate a holder at `priority` should offer the key to because it preempts: above it in priority and asking. */
export function preempter(candidates: Iterable<Candidate>, self: string, priority: number): string | null {
  return bestCandidate(candidates, self, priority, (c) => c.preempt && c.priority > priority);
}

/**
 * Split-brain order, for a store that can see two holders of one key (peer, after a
 * partition heals): higher priority, then higher epoch, then the smaller node id wins.
 */
export function beats(p1: number, e1: number, n1: string, p2: number, e2: number, n2: string): boolean {
  if (p1 !== p2) return p1 > p2;
  if (e1 !== e2) return e1 > e2;
  return n1 < n2;
}
