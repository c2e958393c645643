// A pool built on reload from the previous one (backends it keeps are reused) must not
// keep the previous generation alive: a backend the reload dropped is garbage once the
// data plane lets the old pool go, however many reloads follow.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Pool } from '../../src/pool/pool.ts';
import { poolConfig } from '../helpers/backends.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function backend(name: string, port: number) {
  return { name, origin: `http://127.0.0.1:${port}`, protocol: 'http:' as const, host: '127.0.0.1', port, weight: 1, backup: false, maxConnections: 16 };
}

test('a backend dropped by a reload is collected, though the backend kept beside it lives on through five more reloads', async () => {
  let pool = new Pool(poolConfig('web', [backend('kept', 9), backend('dropped', 10)]), null);
  const kept = pool.byName.get('kept')!;
  const dropped = new WeakRef(pool.byName.get('dropped')!);
  const closes: Promise<void>[] = [pool.byName.get('dropped')!.upstream.close()];
  for (let i = 1; i <= 5; i++) {
    const next: Pool = new Pool(poolConfig('web', [backend('kept', 9), backend(`other${i}`, 10 + i)]), null, pool.byName);
    assert.equal(next.byName.get('kept'), kept, 'the unchanged backend is reused');
    for (const b of pool.backends) if (!next.backends.includes(b)) closes.push(b.upstream.close());
    pool = next;
  }
  await Promise.all(closes);
  // Collected in the next full collections, once nothing but a WeakRef points at it (a
  // deref keeps its target to the end of the turn, so each collection is a turn later).
  for (let i = 0; i < 10 && dropped.deref() !== undefined; i++) {
    await new Promise((r) => setImmediate(r));
    gc();
  }
  assert.equal(dropped.deref(), undefined, 'the dropped backend is still referenced');
  for (const b of pool.backends) await b.upstream.close();
});
