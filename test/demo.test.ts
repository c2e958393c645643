import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { CLI, NODE } from './helpers/tandem.ts';

// The README's first command: a pair on loopback that fails over when one node stops.
test('tandem demo serves on both nodes, and the survivor takes the VIP of a stopped node', async () => {
  const child = spawn(NODE, [CLI, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const waitFor = async (re: RegExp, ms: number) => {
    const deadline = Date.now() + ms;
    while (!re.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.match(out, re);
  };
  try {
    await waitFor(/\[lb1\][^\n]*vip-a MASTER/, 20_000);
    await waitFor(/\[lb2\][^\n]*vip-b MASTER/, 20_000);
    for (const port of [8080, 8081]) {
      const body = await (await fetch(`http://127.0.0.1:${port}/hello`)).json() as { backend: string; path: string };
      assert.match(body.backend, /^app[123]$/);
      assert.equal(body.path, '/hello');
    }
    const pid = Number(out.match(/kill (\d+)/)![1]);
    process.kill(pid, 'SIGTERM');
    await waitFor(/\[lb2\][^\n]*vip-a MASTER/, 5000);
    await waitFor(/\[demo\] restarting lb1/, 5000);
  } finally {
    const exited = once(child, 'exit');
    child.kill('SIGINT');
    await exited;
  }
  assert.equal(child.exitCode, 0);
});
