// Each kind of change travels one way through the channel between the control plane and
// its data planes: a drain goes down once per data plane, a reload is one prepare and
// one commit each way, a passive ejection goes up once, and none of them echoes back.
// Counted by tandem_channel_messages_total, with the data plane in the primary
// (--workers 0), in one worker and in two.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const procs: TandemProcess[] = [];
const backends: TestBackend[] = [];
after(async () => {
  await Promise.all(procs.map((p) => p.stop('SIGKILL')));
  await Promise.all(backends.map((b) => b.stop()));
});

type Counts = Map<string, number>;

/**
 * The channel's messages by `direction/type`, after a scrape. A scrape asks every data
 * plane for its counts and waits for the answers, and the channel keeps order, so every
 * message a data plane sent before answering is counted. The scrape's own messages
 * (snapshot, stats) and the once-a-second stats are left out.
 */
async function channel(t: TandemProcess): Promise<Counts> {
  const text = await (await fetch(`${t.admin}/metrics`)).text();
  const counts: Counts = new Map();
  for (const m of text.matchAll(/^tandem_channel_messages_total\{direction="(\w+)",type="(\w+)"\} (\d+)$/gm)) {
    if (m[2] !== 'snapshot' && m[2] !== 'stats') counts.set(`${m[1]}/${m[2]}`, Number(m[3]));
  }
  return counts;
}

/** What was counted in `later` and not in `before`, as sorted `direction/type=n` entries. */
function added(before: Counts, later: Counts): string[] {
  const out: string[] = [];
  for (const [key, n] of later) if (n !== (before.get(key) ?? 0)) out.push(`${key}=${n - (before.get(key) ?? 0)}`);
  return out.sort();
}

for (const workers of [0, 1, 2]) {
  const planes = Math.max(1, workers);
  describe(`channel messages, --workers ${workers}`, () => {
    test('a drain, a reload and an ejection each travel one way', async () => {
      const [b1, b2] = await Promise.all([startBackend({ name: 'b1' }), startBackend({ name: 'b2' })]);
      backends.push(b1, b2);
      const yaml = (w2: number) => singlePool(
        [{ name: 'b1', url: b1.url }, { name: 'b2', url: b2.url, weight: w2 }],
        { outlier: { consecutiveFailures: 1, on5xx: true, ejectFor: '5m' }, retries: 0 },
      );
      const t = await startTandem(yaml(1), { args: ['--workers', String(workers)] });
      procs.push(t);
      const start = await channel(t);
      assert.equal(start.get('down/start'), planes, 'one start per data plane');

      // A drain: one verdict down to each data plane, nothing back.
      let before = await channel(t);
      assert.equal((await fetch(`${t.admin}/api/v1/pools/web/backends/b2/drain`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status, 200);
      assert.deepEqual(added(before, await channel(t)), [`down/state=${planes}`]);
      for (let i = 0; i < 6; i++) assert.equal((await fetch(`${t.url}/`)).headers.get('x-backend'), 'b1', 'b2 is drained everywhere');

      // A reload: prepare and commit down, their answers up, no verdict sent on top.
      before = await channel(t);
      assert.equal(await t.reload(yaml(2)), 'reloaded');
      assert.deepEqual(added(before, await channel(t)), [
        `down/commit=${planes}`, `down/prepare=${planes}`, `up/committed=${planes}`, `up/prepared=${planes}`,
      ]);

      // An ejection: b1 fails once in the data plane that serves the request, which reports
      // it; the control plane shows it and sends nothing back down.
      before = await channel(t);
      b1.status = 500;
      assert.equal((await fetch(`${t.url}/`)).status, 500);
      assert.deepEqual(added(before, await channel(t)), ['up/ejected=1']);
      const status = await (await fetch(`${t.admin}/api/v1/status`)).json() as { pools: { backends: { name: string; state: string }[] }[] };
      assert.equal(status.pools[0].backends.find((b) => b.name === 'b1')!.state, 'ejected');
      await t.stop();
    });
  });
}
