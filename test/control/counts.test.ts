// DataPlaneCounts: the control plane's sums of its data planes' counters, with what a
// reload removed left out, and the counts of data planes that exited kept.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DataPlaneStats } from '../../src/channel/protocol.ts';
import { DataPlaneCounts } from '../../src/control/counts.ts';
import { liveLabels, RequestCounters, SUM_REQUEST_BYTES, SUM_RESPONSE_BYTES, SUM_RETRIES } from '../../src/dataplane/telemetry.ts';

/** What a data plane's agent would send for `counters`. */
function statsOf(counters: RequestCounters): DataPlaneStats {
  return {
    counters: [...counters.values()].map((c) => ({
      listener: c.listener, route: c.route, pool: c.pool, backend: c.backend,
      codes: [...c.codes.entries()].filter(([, n]) => n !== 0).flat(),
      buckets: c.buckets.slice(), upstream: c.upstream.slice(), sums: c.sums.slice(),
      errors: c.errors === null ? [] : [...c.errors].flat(),
    })),
    backends: [],
    listeners: [],
    upgrades: [...counters.upgrades].map(([key, n]) => [...key.split('\u0000'), n] as [string, string, string, string, number]),
    rejected: [...counters.rejected].map(([key, n]) => [...key.split('\u0000'), n] as [string, string, number]),
  };
}

const config = (pools: Record<string, string[]>, routes: Record<string, string>) => ({
  listeners: [{ name: 'web' }],
  routes: Object.entries(routes).map(([name, pool]) => ({ name, pool, listeners: [] })),
  pools: new Map(Object.entries(pools).map(([name, backends]) => [name, { backends: backends.map((b) => ({ name: b })) }])),
});

test('sums every counter of live and exited data planes, and forgets what a reload removed', () => {
  const counts = new DataPlaneCounts();
  const planes = [new RequestCounters(), new RequestCounters()];
  for (const [i, p] of planes.entries()) {
    p.requestHandle('web', 'app', 'web', 'b1').record(200, 0.01, 10, 100, 1, 0.002, null);
    p.requestHandle('web', 'app', 'web', 'b2').record(502, 0.01, 0, 0, 0, -1, 'TANDEM_ERR_BACKEND_RESET');
    p.requestHandle('web', 'old', 'old', 'o1').record(200, 0.01, 0, 7, 0, 0.001, null);
    p.upgrade('web', 'app', 'web', 'success');
    p.upgrade('web', 'old', 'old', 'error');
    p.reject('', 'TANDEM_ERR_BAD_REQUEST');
    p.reject('old', 'TANDEM_ERR_NO_BACKEND');
    counts.update(i + 1, statsOf(p));
  }
  counts.retire(2);

  const before = config({ web: ['b1', 'b2'], old: ['o1'] }, { app: 'web', old: 'old' });
  const out = new RequestCounters();
  counts.writeCounters(out, liveLabels(before));
  const b1 = out.requestHandle('web', 'app', 'web', 'b1');
  assert.equal(b1.codes[200], 2);
  assert.equal(b1.sums[SUM_REQUEST_BYTES], 20);
  assert.equal(b1.sums[SUM_RESPONSE_BYTES], 200);
  assert.equal(b1.sums[SUM_RETRIES], 2);
  assert.equal(b1.upstream.reduce((a, b) => a + b, 0), 2);
  assert.equal(out.requestHandle('web', 'app', 'web', 'b2').errors?.get('TANDEM_ERR_BACKEND_RESET'), 2);
  assert.equal(out.upgrades.get('web\u0000app\u0000web\u0000success'), 2);
  assert.equal(out.rejected.get('\u0000TANDEM_ERR_BAD_REQUEST'), 2);
  assert.equal(out.rejected.get('old\u0000TANDEM_ERR_NO_BACKEND'), 2);
  // Written again, the same: nothing is counted twice.
  counts.writeCounters(out, liveLabels(before));
  assert.equal(out.requestHandle('web', 'app', 'web', 'b1').codes[200], 2);

  // A reload removed pool `old`, route `old` and backend b2.
  const after = config({ web: ['b1'] }, { app: 'web' });
  counts.writeCounters(out, liveLabels(after));
  assert.deepEqual([...out.values()].map((c) => `${c.route}/${c.pool}/${c.backend}`), ['app/web/b1']);
  assert.equal(out.requestHandle('web', 'app', 'web', 'b1').codes[200], 2);
  assert.deepEqual([...out.upgrades.keys()], ['web\u0000app\u0000web\u0000success']);
  assert.deepEqual([...out.rejected.keys()], ['\u0000TANDEM_ERR_BAD_REQUEST']);
});

test('a route that moves to another pool or leaves a listener loses its series', () => {
  const keep = liveLabels({
    listeners: [{ name: 'web' }, { name: 'admin' }],
    routes: [{ name: 'app', pool: 'api', listeners: ['web'] }],
    pools: new Map([['api', { backends: [{ name: 'a1' }] }]]),
  });
  assert.equal(keep.counter('web', 'app', 'api', 'a1'), true);
  assert.equal(keep.counter('web', 'app', 'api', ''), true);
  assert.equal(keep.counter('web', '', '', ''), true);
  assert.equal(keep.counter('web', 'app', 'web', 'a1'), false);
  assert.equal(keep.counter('admin', 'app', 'api', 'a1'), false);
  assert.equal(keep.counter('gone', '', '', ''), false);
  assert.equal(keep.counter('web', 'app', 'api', 'a2'), false);
  assert.equal(keep.pool(''), true);
  assert.equal(keep.pool('web'), false);
});
