// The benchmark's tandem targets: the configs it writes are valid tandem configs whose
// listener runs on the engine the target names, whatever TANDEM_ENGINE says, and a
// default run has both engines side by side.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfigText } from '../../src/config/load.ts';
import { selectTargets, tandemBareConfig, tandemConfig } from '../../bench/targets/index.ts';

const ORIGIN = ['http://127.0.0.1:1', 'http://127.0.0.1:2'];

function engineOf(yaml: string): string {
  const r = loadConfigText(yaml, 'bench.yaml');
  assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
  return r.config.listeners[0].engine;
}

test('each generated config runs its listener on the engine asked for, fast unless told, even with TANDEM_ENGINE=node', () => {
  const saved = process.env.TANDEM_ENGINE;
  process.env.TANDEM_ENGINE = 'node';
  try {
    assert.equal(engineOf(tandemConfig(ORIGIN, 1)), 'fast');
    assert.equal(engineOf(tandemConfig(ORIGIN, 1, 'node')), 'node');
    assert.equal(engineOf(tandemBareConfig(ORIGIN)), 'fast');
    assert.equal(engineOf(tandemBareConfig(ORIGIN, 'node')), 'node');
  } finally {
    if (saved === undefined) delete process.env.TANDEM_ENGINE;
    else process.env.TANDEM_ENGINE = saved;
  }
});

test('a default run has tandem on the fast engine and tandem-node beside it', () => {
  const ids = selectTargets(undefined).map((t) => t.id);
  assert.equal(ids.indexOf('tandem-node'), ids.indexOf('tandem') + 1);
  assert.deepEqual(selectTargets(['tandem-node']).map((t) => t.label), ['tandem, node engine']);
});
