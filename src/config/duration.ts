// Durations in config files are strings with units, never bare numbers: `30` could
// mean seconds to one reader and milliseconds to the next, and that mistake costs
// outages (a 30 ms health-check timeout, a 30 s lease).

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;

/** Largest duration Node timers accept (2^31 - 1 ms, about 24.8 days). */
export const MAX_DURATION_MS = 2_147_483_647;

/** Milliseconds of a duration like `250ms`, `2s`, `1m30s`, `1.5h`; null when it is not one. */
export function parseDuration(text: string): number | null {
  const s = text.trim();
  if (s === '') return null;
  PART.lastIndex = 0;
  let total = 0;
  while (PART.lastIndex < s.length) {
    const at = PART.lastIndex;
    const m = PART.exec(s);
    if (m === null || m.index !== at) return null;
    total += Number(m[1]) * UNIT_MS[m[2]];
  }
  // 1.0005s is not a whole number of milliseconds; timers would round it silently.
  if (!Number.isInteger(total)) return null;
  return total;
}

/** Short, exact text for milliseconds: 1500 → `1.5s`, 90000 → `1m30s`, 0 → `0s`. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000]] as const) {
    if (rest >= size) {
      out += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  if (rest === 0) return out;
  if (rest % 1000 === 0) return `${out}${rest / 1000}s`;
  if (out === '' && rest > 1000) return `${rest / 1000}s`;
  return `${out}${rest}ms`;
}
