// The proxy's side of the sidecar hook (src/ha/agent-hook.ts): a MASTER run is a
// published event and a wait for the agent's report, and it lasts no longer than the
// lease it runs for.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventBus, type TandemEvent } from '../../src/events.ts';
import { AgentHook } from '../../src/ha/agent-hook.ts';
import { captureLogger } from '../helpers/log.ts';

function hookOn(bus: EventBus, timeout = 30_000) {
  const { log, lines } = captureLogger();
  const hook = new AgentHook({ bus, node: 'lb1', vip: 'vip-a', address: '10.213.0.100/24', interface: 'eth0', timeout, log });
  const published: TandemEvent[] = [];
  bus.on('event', (e) => published.push(e));
  return { hook, lines, published };
}

test('a MASTER run is published for the agent and ends with the agent\'s report of its epoch', async () => {
  const bus = new EventBus();
  const { hook, published } = hookOn(bus);
  const run = hook.run('MASTER', 7, new AbortController().signal);
  assert.deepEqual(published.map((e) => e.type === 'vip' && `${e.state}@${e.epoch}`), ['MASTER@7']);
  bus.publish({ type: 'hook', vip: 'vip-a', state: 'MASTER', epoch: 6, outcome: 'ok', ms: 3 });
  bus.publish({ type: 'hook', vip: 'vip-b', state: 'MASTER', epoch: 7, outcome: 'ok', ms: 3 });
  bus.publish({ type: 'hook', vip: 'vip-a', state: 'MASTER', epoch: 7, outcome: 'ok', ms: 3 });
  assert.equal(await run, 'ok');
  hook.close();
});

test('a MASTER run whose lease is lost ends at once, without waiting for the agent or its timeout', async () => {
  const bus = new EventBus();
  const { hook, lines } = hookOn(bus);
  const lease = new AbortController();
  const run = hook.run('MASTER', 3, lease.signal);
  const t0 = performance.now();
  lease.abort();
  assert.equal(await run, 'failed');
  assert.ok(performance.now() - t0 < 1000, 'the run ended on the abort, not on the 30 s timeout');
  assert.ok(lines.some((l) => l.reason === 'lease lost' && /stopped: the lease was lost/.test(l.msg)), JSON.stringify(lines));
  // A late report of that run changes nothing, and the next run waits for its own.
  bus.publish({ type: 'hook', vip: 'vip-a', state: 'MASTER', epoch: 3, outcome: 'ok', ms: 1 });
  const next = hook.run('MASTER', 4, new AbortController().signal);
  bus.publish({ type: 'hook', vip: 'vip-a', state: 'MASTER', epoch: 4, outcome: 'failed', ms: 1 });
  assert.equal(await next, 'failed');
  hook.close();
});

test('a lease already lost when the MASTER run is asked for does not wait at all', async () => {
  const bus = new EventBus();
  const { hook } = hookOn(bus);
  const lease = new AbortController();
  lease.abort();
  assert.equal(await hook.run('MASTER', 1, lease.signal), 'failed');
  hook.close();
});

test('a STOP run waits for the agent\'s report that the address is off, so that the listeners close only after it', async () => {
  const bus = new EventBus();
  const { hook, published } = hookOn(bus);
  let settled = false;
  const run = hook.run('STOP', 5).then((outcome) => {
    settled = true;
    return outcome;
  });
  assert.deepEqual(published.map((e) => e.type === 'vip' && `${e.state}@${e.epoch}`), ['STOP@5']);
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, 'STOP ended before the agent reported');
  bus.publish({ type: 'hook', vip: 'vip-a', state: 'BACKUP', epoch: 5, outcome: 'ok', ms: 1 });
  bus.publish({ type: 'hook', vip: 'vip-a', state: 'STOP', epoch: 4, outcome: 'ok', ms: 1 });
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, 'another state\'s or epoch\'s report ended the STOP run');
  bus.publish({ type: 'hook', vip: 'vip-a', state: 'STOP', epoch: 5, outcome: 'failed', ms: 2 });
  // Not a failure to retry: the agent ignores the same state published again.
  assert.equal(await run, 'ok');
  hook.close();
});

test('a STOP run with no agent to report ends at the timeout, logged, and the stop goes on', async () => {
  const bus = new EventBus();
  const { hook, lines } = hookOn(bus, 200);
  assert.equal(await hook.run('STOP', 1), 'ok');
  assert.ok(lines.some((l) => l.outcome === 'unconfirmed' && /STOP \(epoch 1\) not reported done within 200 ms/.test(l.msg)), JSON.stringify(lines));
  hook.close();
});

test('BACKUP and FAULT runs are published and not waited for: the elector\'s loop never stalls on a removal', async () => {
  const bus = new EventBus();
  const { hook } = hookOn(bus);
  assert.equal(await hook.run('BACKUP', 2), 'ok');
  assert.equal(await hook.run('FAULT', 2), 'ok');
  hook.close();
});
