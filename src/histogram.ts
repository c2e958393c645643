// The bucket bounds every tandem histogram shares (request durations, time to the
// backend's response head, health check durations), and the slot of a value in a
// non-cumulative bucket array. Plain typed arrays: no prom-client, so data planes and
// health checks count without it.

/** Upper bounds in seconds: 1 ms (a cached answer on loopback) to 10 s. */
export const DURATION_BUCKETS: readonly number[] = Object.freeze([
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
]);
// The hot path scans a typed copy: reading a frozen array was several times slower
// in V8 when measured here.
const BOUNDS = new Float64Array(DURATION_BUCKETS);

/** Slots of a non-cumulative bucket array: one per bound, and +Inf last. */
export const BUCKET_SLOTS = BOUNDS.length + 1;

/** The slot of `seconds` in a bucket array. A linear scan stops early for the fast values that dominate. */
export function bucketOf(seconds: number): number {
  let i = 0;
  while (i < BOUNDS.length && seconds > BOUNDS[i]) i++;
  return i;
}
