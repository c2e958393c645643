import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { errors } from '../src/errors.ts';

const doc = readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
const rows = new Map<string, string>();
for (const m of doc.matchAll(/^\| `(TANDEM_ERR_[A-Z_]+)` \| (\d{3}|—) \|/gm)) rows.set(m[1], m[2]);

test('every error code in the catalogue is documented with its HTTP status', () => {
  for (const spec of Object.values(errors)) {
    assert.ok(rows.has(spec.code), `${spec.code} is missing from docs/errors.md`);
    assert.equal(rows.get(spec.code), spec.status === 0 ? '—' : String(spec.status), `status of ${spec.code}`);
  }
});

test('docs/errors.md names no code the catalogue lacks', () => {
  const codes = new Set(Object.values(errors).map((s) => s.code));
  for (const code of rows.keys()) assert.ok(codes.has(code), `${code} is documented but not in src/errors.ts`);
});

test('codes are unique and carry the TANDEM_ERR_ prefix', () => {
  const codes = Object.values(errors).map((s) => s.code);
  assert.equal(new Set(codes).size, codes.length);
  for (const c of codes) assert.match(c, /^TANDEM_ERR_[A-Z_]+$/);
});
