import type { Backend } from '../backend.ts';

// One full cycle of nginx's smooth weighted round-robin, computed ahead of time so that
// taking the next backend is an array read and an integer increment. nginx runs the
// algorithm live (O(n) per pick); the sequence it produces is periodic with period
// sum(weights) once the weights are integers, so one period is all pick() needs.

/**
 * Up to this many backends the cycle is nginx's exact order, which costs
 * O(cycle × backends) to lay out. Bigger pools get a deadline order, nearly as smooth, in
 * O(cycle × log backends), since a pool rebuilds on every health or weight change and
 * nginx's loop would take milliseconds per rebuild at a thousand backends.
 */
const NGINX_ORDER_LIMIT = 64;
/** Longest cycle kept; a longer one is scaled down (weights keep their ratio to ~1/65536). */
const MAX_CYCLE = 65_536;
/** Bound on the work of nginx's order (cycle × backends): about a millisecond. */
const NGINX_WORK = 1 << 20;
/** Fractional effective weights (slow start may produce them) are kept to 1/1000. */
const FRACTION_SCALE = 1000;

/**
 * The smooth order over the backends that were available at the last build, and a
 * cursor into it. Shared by the balancers that want a weighted round-robin sequence.
 *
 * Rebuilds keep the split honest. A smooth cycle is uneven inside: 5,1,1 starts a,a,b,
 * so restarting at the top on every rebuild (slow start rebuilds every few hundred ms)
 * would replay the heavy backend's favourable start and starve the light ones; mapping
 * the cursor proportionally into the new cycle is better but still drifts when weights
 * ramp in one direction. So a build works out each backend's deficit (picks it was due
 * by its share minus picks it got, over its whole life in the schedule) and starts the
 * new cycle at the position whose own deficits are closest to those; what cannot be
 * matched is carried to the next build. A backend that drops out keeps its deficit
 * for when it returns. Between builds nothing is tracked per pick: the deficit at any
 * cursor follows from the cycle itself. In tests this keeps every backend within one to
 * three requests of its share through thousands of rebuilds, where restarting the
 * cycle drifts by hundreds.
 */
export class SmoothSchedule {
  /** Backends available at the last build; `order` holds indexes into this. */
  members: readonly Backend[];
  /** One full cycle of member indexes. */
  order: Uint32Array;
  cursor: number;
  /** Each member's share of the cycle (its slots / cycle length). */
  private shares: Float64Array;
  /** Deficit carried in at the last build that the start position did not account for. */
  private residual: Float64Array;
  /** Deficits of backends that were members before and are unavailable now. */
  private readonly parked: Map<Backend, number>;

  constructor() {
    this.members = [];
    this.order = new Uint32Array(0);
    this.cursor = 0;
    this.shares = new Float64Array(0);
    this.residual = new Float64Array(0);
    this.parked = new Map();
  }

  /**
   * Recomputes the cycle from the backends' availability and effective weights, and
   * places the cursor where the new cycle best continues the split so far.
   */
  build(backends: readonly Backend[]): void {
    const owed = this.deficits();
    const members: Backend[] = [];
    const weights: number[] = [];
    for (const b of backends) {
      if (b.isAvailable() && b.effectiveWeight > 0) {
        members.push(b);
        weights.push(b.effectiveWeight);
      }
    }
    const n = members.length;
    const order = smoothOrder(weights);
    const length = order.length;
    const shares = new Float64Array(n);
    for (let t = 0; t < length; t++) shares[order[t]]++;
    for (let i = 0; i < n; i++) shares[i] /= length;

    // Deficits of the new members: carried for those that stay or return, 0 for newcomers.
    const deficit = new Float64Array(n);
    for (let i = 0; i < n; i++) deficit[i] = owed.get(members[i]) ?? this.parked.get(members[i]) ?? 0;
    for (const [b, d] of owed) this.parked.set(b, d);
    for (const b of members) this.parked.delete(b);

    const start = closestPosition(order, shares, deficit);
    const got = prefixCounts(order, start, n);
    const residual = new Float64Array(n);
    for (let i = 0; i < n; i++) residual[i] = deficit[i] - (start * shares[i] - got[i]);

    this.members = members;
    this.order = order;
    this.shares = shares;
    this.residual = residual;
    this.cursor = length === 0 ? 0 : start;
  }

  /**
   * The next available backend in the cycle, or null. Skips members that became
   * unavailable since the last build (bounded by one cycle), so a late rebuild never
   * leads to an unavailable pick.
   */
  next(): Backend | null {
    const order = this.order;
    const members = this.members;
    const length = order.length;
    let cursor = this.cursor;
    for (let tries = 0; tries < length; tries++) {
      const b = members[order[cursor]];
      cursor = cursor + 1 === length ? 0 : cursor + 1;
      if (b.isAvailable()) {
        this.cursor = cursor;
        return b;
      }
    }
    this.cursor = cursor;
    return null;
  }

  /** Each current member's deficit now, in picks. Whole cycles add nothing, so the cursor says it all. */
  private deficits(): Map<Backend, number> {
    const members = this.members;
    const n = members.length;
    const owed = new Map<Backend, number>();
    if (n === 0) return owed;
    const cursor = this.cursor;
    const got = prefixCounts(this.order, cursor, n);
    for (let i = 0; i < n; i++) owed.set(members[i], this.residual[i] + cursor * this.shares[i] - got[i]);
    return owed;
  }
}

/** How many slots each member has in order[0, end). */
function prefixCounts(order: Uint32Array, end: number, n: number): Float64Array {
  const got = new Float64Array(n);
  for (let t = 0; t < end; t++) got[order[t]]++;
  return got;
}

/**
 * The cycle position whose deficits (p·share − slots before p, per member) are closest,
 * in squared distance, to `deficit`. O(length + n): with e = slots + deficit, the
 * distance is p²·Σs² − 2p·Σ(s·e) + Σe², and each step changes one e by 1.
 */
function closestPosition(order: Uint32Array, shares: Float64Array, deficit: Float64Array): number {
  const n = shares.length;
  const length = order.length;
  if (length === 0) return 0;
  const e = Float64Array.from(deficit);
  let s2 = 0;
  let se = 0;
  let e2 = 0;
  for (let i = 0; i < n; i++) {
    s2 += shares[i] * shares[i];
    se += shares[i] * e[i];
    e2 += e[i] * e[i];
  }
  let best = 0;
  let bestDistance = e2;
  for (let p = 1; p < length; p++) {
    const j = order[p - 1];
    se += shares[j];
    e2 += 2 * e[j] + 1;
    e[j] += 1;
    const distance = p * p * s2 - 2 * p * se + e2;
    // A margin against rounding, so that equal distances keep the earliest position.
    if (distance < bestDistance - 1e-9) {
      best = p;
      bestDistance = distance;
    }
  }
  return best;
}

/**
 * One full smooth cycle for these weights: nginx's order (5,1,1 → a,a,b,a,c,a,a) for up
 * to NGINX_ORDER_LIMIT backends, the deadline order beyond. Either way each backend
 * appears exactly its (reduced) weight times per cycle, spread evenly over it.
 */
export function smoothOrder(weights: readonly number[]): Uint32Array {
  const n = weights.length;
  if (n === 0) return new Uint32Array(0);
  const exact = n <= NGINX_ORDER_LIMIT;
  const limit = Math.max(n, exact ? Math.min(MAX_CYCLE, Math.floor(NGINX_WORK / n)) : MAX_CYCLE);
  const w = integerWeights(weights, limit);
  let total = 0;
  let allEqual = true;
  for (let i = 0; i < n; i++) {
    total += w[i];
    if (w[i] !== w[0]) allEqual = false;
  }
  if (allEqual) {
    // Reduced by their gcd, equal weights are all 1: the smooth order is plain order.
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    return order;
  }
  return exact ? nginxOrder(w, total) : deadlineOrder(w, total);
}

/** nginx's rule, step by step: add each weight to its running value, take the largest, subtract the total from it. */
function nginxOrder(w: readonly number[], total: number): Uint32Array {
  const n = w.length;
  const order = new Uint32Array(total);
  const current = new Float64Array(n);
  for (let t = 0; t < total; t++) {
    let best = 0;
    let bestValue = -Infinity;
    for (let i = 0; i < n; i++) {
      const value = current[i] + w[i];
      current[i] = value;
      // Strictly greater: the first of equal candidates wins, as in nginx.
      if (value > bestValue) {
        best = i;
        bestValue = value;
      }
    }
    current[best] -= total;
    order[t] = best;
  }
  return order;
}

/**
 * Slots in order of their ideal time in the cycle: backend i's k-th slot belongs at
 * (k + φ_i)/w_i, evenly spaced. The phase φ_i = (i + ½)/n staggers backends of equal
 * weight, which would otherwise all fall due at the same moment and come in a burst
 * (a,b,c,d… of weight 1 next to one of weight 1000). A heap of backends keyed by their
 * next slot gives O(total × log n); ties go to the lower index.
 */
function deadlineOrder(w: readonly number[], total: number): Uint32Array {
  const n = w.length;
  const order = new Uint32Array(total);
  const taken = new Float64Array(n);
  const key = new Float64Array(n);
  const heap = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    heap[i] = i;
    key[i] = phase(i, n) / w[i];
  }
  let size = n;
  for (let i = (size >> 1) - 1; i >= 0; i--) siftDown(heap, size, i, key);
  for (let t = 0; t < total; t++) {
    const i = heap[0];
    order[t] = i;
    const k = ++taken[i];
    if (k === w[i]) heap[0] = heap[--size];
    else key[i] = (k + phase(i, n)) / w[i];
    siftDown(heap, size, 0, key);
  }
  return order;
}

function phase(i: number, n: number): number {
  return (i + 0.5) / n;
}

function siftDown(heap: Int32Array, size: number, at: number, key: Float64Array): void {
  const item = heap[at];
  const itemKey = key[item];
  for (;;) {
    let child = 2 * at + 1;
    if (child >= size) break;
    let c = heap[child];
    let ck = key[c];
    if (child + 1 < size) {
      const r = heap[child + 1];
      const rk = key[r];
      if (rk < ck || (rk === ck && r < c)) {
        child++;
        c = r;
        ck = rk;
      }
    }
    if (ck > itemKey || (ck === itemKey && c > item)) break;
    heap[at] = c;
    at = child;
  }
  heap[at] = item;
}

/** Positive integer weights with the same ratios, reduced by their gcd, summing to about `limit` at most. */
function integerWeights(weights: readonly number[], limit: number): number[] {
  let w = weights.every(Number.isInteger)
    ? weights.slice()
    : weights.map((x) => Math.max(1, Math.round(x * FRACTION_SCALE)));
  w = reduce(w);
  let sum = 0;
  for (const x of w) sum += x;
  if (sum > limit) {
    // Every available backend keeps at least one slot, so the cycle may end up
    // slightly above the limit; ratios among heavy backends survive to ~1/limit.
    const scale = limit / sum;
    w = reduce(w.map((x) => Math.max(1, Math.round(x * scale))));
  }
  return w;
}

function reduce(w: number[]): number[] {
  let g = 0;
  for (const x of w) g = gcd(g, x);
  return g > 1 ? w.map((x) => x / g) : w;
}

function gcd(a: number, b: number): number {
  while (b !== 0) {
    const t = a % b;
    a = b;
    b = t;
  }
  return a;
}
