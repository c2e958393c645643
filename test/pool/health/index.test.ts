import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startPoolHealth } from '../../../src/pool/health/index.ts';
import { Pool } from '../../../src/pool/pool.ts';
import { poolConfig, startBackend } from '../../helpers/backends.ts';
import { healthCheck, until } from './fixtures.ts';

test('a pool without health settings gets no detector and stops at once', async () => {
  const pool = new Pool(poolConfig('plain', []), null);
  const health = startPoolHealth(pool);
  assert.equal(health.outlier, null);
  await health.stop();
});

test('a reload that turns health checks off brings a down backend back', async (t) => {
  const b = await startBackend({ name: 'web1' });
  b.healthStatus = 500;
  t.after(() => b.close());
  const cfg = poolConfig('web', [b.config()], { healthCheck: healthCheck({ fall: 1 }) });
  const old = new Pool(cfg, null);
  const first = startPoolHealth(old);
  const backend = old.backends[0];
  await until(() => !backend.healthy, 1000, 'down');
  const next = new Pool({ ...cfg, healthCheck: null }, null, old.byName);
  const second = startPoolHealth(next);
  await first.stop();
  await second.stop();
  assert.equal(next.backends[0], backend);
  assert.equal(backend.healthy, true);
  assert.equal(next.pick(), backend);
});

test('checks, ejection and slow start work together: an ejected backend that passes a check ramps up', async (t) => {
  const b = await startBackend({ name: 'web1' });
  t.after(() => b.close());
  const pool = new Pool(
    poolConfig('web', [b.config({ weight: 10 })], {
      healthCheck: healthCheck({ interval: 50 }),
      outlier: { consecutiveFailures: 2, on5xx: true, ejectFor: 60_000, maxEjectFor: 60_000, maxEjectedPercent: 100 },
      slowStart: 500,
    }),
    null,
  );
  const health = startPoolHealth(pool);
  t.after(() => health.stop());
  const backend = pool.backends[0];
  health.outlier!.onFailure(backend, '5xx');
  health.outlier!.onFailure(backend, '5xx');
  assert.equal(backend.ejected, true);
  assert.equal(pool.pick(), null);
  await until(() => !backend.ejected, 500, 'un-ejected by a check');
  assert.equal(backend.effectiveWeight, 1);
  await until(() => backend.effectiveWeight === 10, 1500, 'full weight');
});
