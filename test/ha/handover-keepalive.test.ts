// A keep-alive client (4 connections, a request every 10 ms) across a planned handover
// and the failback, in network namespaces:
// before a VIP moves, its holder closes the idle keep-alive connections on it and answers
// the busy ones with Connection: close (src/dataplane/vacate.ts), so a client reusing its
// connections never sends a request into a connection the new holder resets.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { netnsUnavailable, run } from '../helpers/netns.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';
import { KeepAliveClient } from './keepalive-client.ts';
import { HaLab } from './lab.ts';
import { sleep } from './support.ts';

const missing = async (tool: string) => (await run('sh', ['-c', `command -v ${tool}`])).code !== 0;
const skip = skipUnlessCi(netnsUnavailable() ?? ((await missing('arping')) ? 'arping is not installed (apt-get install iputils-arping)' : null));

describe('keep-alive clients across a planned handover', { skip, concurrency: false }, () => {
  const labs: HaLab[] = [];
  after(async () => {
    for (const h of labs) await h.destroy();
  });

  test('handover by SIGTERM and failback after the preempt delay: not one request of a keep-alive client fails', async (t) => {
    const h = await HaLab.create({ lease: 1000, renewEvery: 200, preemptDelay: 1000 });
    labs.push(h);
    await h.start('lb1');
    await h.start('lb2');
    await h.settle('vip-a', 'lb1');
    const c = new KeepAliveClient(h, 'vip-a');
    await c.answered();
    await sleep(300);
    // The stop hands vip-a over (the STOP path of a planned release)...
    const marks: Record<string, number> = { stop: performance.now() };
    await h.signal('lb1', 'SIGTERM');
    await h.settle('vip-a', 'lb2', 5000 + h.overlapAllowed(0));
    await h.clientPointsAt('vip-a', 'lb2', 5000 + h.overlapAllowed(0));
    const stopped = h.nodes.get('lb1')!.output();
    await sleep(300);
    // ...and lb1, back, takes it over from lb2 by preemption (lb2 hands it over).
    marks.handedOver = performance.now();
    await h.start('lb1');
    marks.restarted = performance.now();
    await h.settle('vip-a', 'lb1', 5000 + h.overlapAllowed(0));
    await h.clientPointsAt('vip-a', 'lb1', 5000 + h.overlapAllowed(0));
    await sleep(300);
    marks.failedBack = performance.now();
    await c.stop();
    const reused = c.results.filter((r) => r.reused).length;
    const onReused = c.failures().filter((r) => r.reused);
    const onFresh = c.failures().filter((r) => !r.reused);
    const line = `keep-alive client across handover and failback: ${c.results.length} requests (${reused} on reused connections); failed: ${onReused.length} on reused connections, ${onFresh.length} on new ones`;
    t.diagnostic(line);
    process.stdout.write(`# ${line}\n`);
    const when = JSON.stringify(Object.fromEntries(Object.entries(marks).map(([k, v]) => [k, Math.round(v)])));
    assert.ok(reused >= 100, 'the client kept its connections alive between handovers');
    // Without the wind-down every connection the client keeps is reset at each move (4
    // each time, all reused). A request in flight at the very moment the ARP moves is
    // lost whatever the holder does: at most one per client connection per move.
    assert.deepEqual(onReused, [], `no request on a kept-alive connection failed (times: ${when})`);
    assert.ok(onFresh.length <= 2 * 4, `at most one request in flight per connection lost per move: ${JSON.stringify(onFresh)} (times: ${when})`);
    const wound = /connections on 10\.213\.0\.100 wound down in \d+ ms/;
    assert.match(stopped, wound, 'lb1 wound the connections on the VIP down before it handed the VIP over');
    assert.match(h.nodes.get('lb2')!.output(), wound, 'lb2 did the same when lb1 took the VIP back');
    labs.splice(labs.indexOf(h), 1);
    await h.destroy();
  });
});
