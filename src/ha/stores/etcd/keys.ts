// Where the etcd store keeps what, and in which format:
//   <prefix>/vips/<vip>               {n: holder, p: priority, s: serving, o: offeredTo, e: epoch, t: ttl ms}
//                                     bound to an etcd lease of the holder, one per holding
//   <prefix>/candidates/<vip>/<node>  {p: priority, x: preempt}, bound to the node's presence lease
// VIP and node names cannot hold "/" (config names are letters, digits, ".", "_", "-").

import type { Candidate } from '../../candidates.ts';

/** The value of a VIP key: who holds it and how. */
export interface Holding {
  readonly n: string;
  readonly p: number;
  readonly s: boolean;
  readonly o: string | null;
  /** The holder's epoch; absent on the write that made it holder (its revision is the epoch). */
  readonly e?: number;
  /** The lease's TTL in ms, for the others' view of it. */
  readonly t: number;
}

/** What a key under the prefix is. */
export type KeyRef = { readonly kind: 'vip'; readonly vip: string } | { readonly kind: 'candidate'; readonly vip: string; readonly node: string } | null;

export class KeyLayout {
  /** Everything the store reads and watches: `<prefix>/`. */
  readonly root: string;
  private readonly vips: string;
  private readonly candidates: string;

  constructor(prefix: string) {
    this.root = `${prefix.replace(/\/+$/, '')}/`;
    this.vips = `${this.root}vips/`;
    this.candidates = `${this.root}candidates/`;
  }

  vip(vip: string): string {
    return `${this.vips}${vip}`;
  }

  candidate(vip: string, node: string): string {
    return `${this.candidates}${vip}/${node}`;
  }

  parse(key: string): KeyRef {
    if (key.startsWith(this.vips)) return { kind: 'vip', vip: key.slice(this.vips.length) };
    if (!key.startsWith(this.candidates)) return null;
    const rest = key.slice(this.candidates.length);
    const slash = rest.lastIndexOf('/');
    return slash <= 0 ? null : { kind: 'candidate', vip: rest.slice(0, slash), node: rest.slice(slash + 1) };
  }
}

export function parseHolding(value: string): Holding | null {
  try {
    const h = JSON.parse(value) as Partial<Holding>;
    if (typeof h.n !== 'string') return null;
    return { n: h.n, p: Number(h.p ?? 0), s: h.s === true, o: typeof h.o === 'string' ? h.o : null, e: typeof h.e === 'number' ? h.e : undefined, t: Number(h.t ?? 0) };
  } catch {
    return null;
  }
}

/** Who holds the key and how, in the terms of the election policy (src/ha/handover.ts). */
export function holdingFacts(h: Holding | null): { holder: string | null; priority: number; serving: boolean; offeredTo: string | null } {
  return h === null ? { holder: null, priority: 0, serving: false, offeredTo: null } : { holder: h.n, priority: h.p, serving: h.s, offeredTo: h.o };
}

/** The candidacy key of `node`, as the Candidate it stands for. */
export function parseCandidacy(node: string, value: string): Candidate {
  try {
    const c = JSON.parse(value) as { p?: unknown; x?: unknown };
    return { node, priority: Number(c.p ?? 0), preempt: c.x === true };
  } catch {
    return { node, priority: 0, preempt: false };
  }
}
