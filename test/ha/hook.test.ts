// The hook runner of one VIP (src/ha/hook.ts) with a real executable: arguments and
// environment, one run at a time, only the newest waiting state run, failures and the
// timeout.

import { after, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VipHook, type HookOptions } from '../../src/ha/hook.ts';
import { messageLogger } from '../helpers/log.ts';

const HOOK = new URL('./fixtures/record-hook.sh', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'tandem-hook-runner-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let logFile = '';
let lines: string[] = [];
beforeEach(() => {
  logFile = join(dir, `hook-${Math.random().toString(36).slice(2)}.log`);
  process.env.HOOK_LOG = logFile;
  delete process.env.HOOK_DELAY;
  delete process.env.HOOK_FAIL;
  lines = [];
});

function runner(overrides: Partial<HookOptions> = {}): VipHook {
  return new VipHook({
    path: HOOK, node: 'lb1', vip: 'vip-a', address: '10.0.0.100/24', interface: 'eth0',
    timeout: 5000, garpCount: 3, garpInterval: 200, garpRefresh: 0, log: messageLogger(lines),
    ...overrides,
  });
}

/** The hook's own records: [ns clock, start|end|fail, STATE, VIP, node, epoch]. */
function records(): string[][] {
  return readFileSync(logFile, 'utf8').trim().split('\n').map((l) => l.split(' '));
}

describe('VIP hook runner', () => {
  test('runs the hook with STATE VIP ADDRESS/PREFIX INTERFACE and TANDEM_NODE, TANDEM_VIP, TANDEM_EPOCH set', async () => {
    const envHook = join(dir, 'env-hook.sh');
    writeFileSync(envHook, `#!/bin/sh\necho "$* $TANDEM_NODE $TANDEM_VIP $TANDEM_EPOCH $TANDEM_GARP_COUNT $TANDEM_GARP_INTERVAL $TANDEM_GARP_REFRESH" >> "$HOOK_LOG"\n`);
    chmodSync(envHook, 0o755);
    assert.equal(await runner({ path: envHook }).run('MASTER', 7), 'ok');
    assert.equal(readFileSync(logFile, 'utf8'), 'MASTER vip-a 10.0.0.100/24 eth0 lb1 vip-a 7 3 200 0\n');
  });

  test('never runs two hooks at once for a VIP, and of the states asked for meanwhile only the newest runs', async () => {
    process.env.HOOK_DELAY = '0.3';
    const hook = runner();
    const first = hook.run('MASTER', 1);
    await new Promise((r) => setTimeout(r, 50));
    const asked = [hook.run('BACKUP', 2), hook.run('MASTER', 3), hook.run('FAULT', 4)];
    assert.deepEqual(await Promise.all([first, ...asked]), ['ok', 'superseded', 'superseded', 'ok']);
    const r = records();
    assert.deepEqual(r.map((x) => `${x[1]} ${x[2]} ${x[5]}`), ['start MASTER 1', 'end MASTER 1', 'start FAULT 4', 'end FAULT 4']);
    assert.ok(BigInt(r[2][0]) >= BigInt(r[1][0]), 'the second run started only after the first had ended');
  });

  test('the same state and epoch asked for twice while waiting runs once, and both callers hear the outcome', async () => {
    process.env.HOOK_DELAY = '0.2';
    const hook = runner();
    const first = hook.run('MASTER', 1);
    await new Promise((r) => setTimeout(r, 50));
    const both = [hook.run('BACKUP', 2), hook.run('BACKUP', 2)];
    assert.deepEqual(await Promise.all([first, ...both]), ['ok', 'ok', 'ok']);
    assert.equal(records().filter((x) => x[1] === 'start').length, 2);
  });

  test('a hook that exits non-zero fails, with its output in the log line', async () => {
    process.env.HOOK_FAIL = 'MASTER@lb1';
    assert.equal(await runner().run('MASTER', 1), 'failed');
    assert.ok(lines.some((l) => l.includes('TANDEM_ERR_HOOK_FAILED') && l.includes('exited with 1') && l.includes('cannot change 10.0.0.100/24')), lines.join('\n'));
  });

  test('a hook that overruns its timeout is killed with what it started, and fails, and the next state runs', async () => {
    // The hook's own child stands for an `ip` command that hangs; it must not live on.
    const slow = join(dir, 'slow-hook.sh');
    writeFileSync(slow, `#!/bin/sh\nif [ -n "\${HOOK_DELAY:-}" ]; then sleep "$HOOK_DELAY" & echo "$!" > "$HOOK_LOG.child"; wait; fi\nexec ${HOOK} "$@"\n`);
    chmodSync(slow, 0o755);
    process.env.HOOK_DELAY = '10';
    const hook = runner({ timeout: 300, path: slow });
    const started = performance.now();
    const stuck = hook.run('MASTER', 1);
    await new Promise((r) => setTimeout(r, 50));
    delete process.env.HOOK_DELAY;
    const next = hook.run('BACKUP', 2);
    assert.equal(await stuck, 'failed');
    assert.ok(performance.now() - started < 2000, 'the timeout ended the run');
    assert.equal(await next, 'ok');
    assert.ok(lines.some((l) => l.includes('timed out (300 ms)')), lines.join('\n'));
    const r = records();
    assert.deepEqual(r.map((x) => `${x[1]} ${x[2]}`), ['start BACKUP', 'end BACKUP'], 'the killed run never got as far as the change');
    const child = Number(readFileSync(`${logFile}.child`, 'utf8'));
    assert.equal(existsSync(`/proc/${child}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${child}/status`, 'utf8')), false, 'the hook\'s child was killed with it');
  });

  test('without a hook path the transitions are only logged', async () => {
    assert.equal(await runner({ path: null }).run('MASTER', 3), 'ok');
    assert.deepEqual(lines, ['vip hook (log-only): vip-a MASTER 10.0.0.100/24 eth0 (epoch 3)']);
  });
});
