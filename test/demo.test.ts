import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import http from 'node:http';
import { CLI, NODE } from './helpers/tandem.ts';

/** Sequential HTTP GETs, each on a new connection, as the demo's curl loop does; bounded in count and time. */
class Probe {
  ok = 0;
  /** What the test is doing now, to name failures by. */
  phase = 'start';
  readonly failures: string[] = [];
  private stopped = false;
  private readonly done: Promise<void>;

  constructor(url: string, max = 5000, ms = 180_000) {
    const until = Date.now() + ms;
    this.done = (async () => {
      for (let i = 0; i < max && !this.stopped && Date.now() < until; i++) {
        const error = await get(url);
        if (error === null) this.ok++;
        else this.failures.push(`${error} (${this.phase})`);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
  }

  /** Resolves once `n` more probes have succeeded than when called. */
  async more(n: number, ms = 60_000): Promise<void> {
    const target = this.ok + n;
    const deadline = Date.now() + ms;
    while (this.ok < target) {
      assert.ok(Date.now() < deadline, `the relay answered ${this.ok} probes, not ${target}; failures: ${this.failures.join(', ')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }
}

function get(url: string): Promise<string | null> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 5000 }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode === 200 ? null : `HTTP ${res.statusCode}`));
      res.once('error', (err) => resolve(err.message));
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

// The README's first command: a pair on loopback, and one address (the relay) that follows
// vip-a, so a user sees that stopping the holder costs a client nothing.
test('tandem demo: the relay follows vip-a through kill -9 and kill of lb1, and keeps answering', async () => {
  const child = spawn(NODE, [CLI, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  /** Resolves when `re` has matched `count` times in the output; event-driven, bounded. */
  const waitFor = (re: RegExp, ms: number, count = 1): Promise<RegExpMatchArray> => new Promise((resolve, reject) => {
    const g = new RegExp(re.source, 'g');
    const check = () => {
      const all = [...out.matchAll(g)];
      if (all.length < count) return;
      cleanup();
      resolve(all[count - 1]);
    };
    const fail = (why: string) => {
      cleanup();
      reject(new Error(`${why} waiting for ${re} (x${count}):\n${out}`));
    };
    const t = setTimeout(() => fail(`timed out after ${ms} ms`), ms);
    const onExit = () => fail('the demo exited');
    const cleanup = () => {
      clearTimeout(t);
      child.stdout.off('data', check);
      child.off('exit', onExit);
    };
    child.stdout.on('data', check);
    child.once('exit', onExit);
    check();
  });
  let probe: Probe | null = null;
  try {
    const relay = (await waitFor(/relay {9}(http:\/\/\S+)/, 60_000))[1];
    assert.match(out, /while :; do curl -s -m 2 -o \/dev\/null http:\/\/127\.0\.0\.1:8088\/ && printf \. \|\| printf x; sleep 0\.05; done/);
    await waitFor(/\[relay\] vip-a now at lb1/, 60_000);
    await waitFor(/\[lb2\][^\n]*vip-b MASTER/, 60_000);
    for (const port of [8080, 8081]) {
      const body = await (await fetch(`http://127.0.0.1:${port}/hello`)).json() as { backend: string; path: string };
      assert.match(body.backend, /^app[123]$/);
      assert.equal(body.path, '/hello');
    }
    probe = new Probe(relay);
    await probe.more(10);

    // kill -9 of lb1: lb2 takes vip-a, the relay follows.
    const pid = Number(out.match(/kill -9 (\d+)/)![1]);
    probe.phase = 'kill -9 lb1';
    process.kill(pid, 'SIGKILL');
    await waitFor(/\[lb2\][^\n]*vip-a MASTER/, 20_000);
    await waitFor(/\[relay\] vip-a now at lb2/, 20_000);
    await probe.more(10);

    // The demo brings lb1 back; it takes vip-a back after its preempt delay. Then a plain kill.
    probe.phase = 'lb1 restarts';
    const again = Number((await waitFor(/\[demo\] lb1 started again, pid (\d+)/, 30_000))[1]);
    probe.phase = 'failback to lb1';
    await waitFor(/\[relay\] vip-a now at lb1 \(127\.0\.0\.1:8080\), was at lb2/, 60_000);
    await probe.more(10);
    probe.phase = 'kill lb1';
    process.kill(again, 'SIGTERM');
    await waitFor(/\[relay\] vip-a now at lb2/, 20_000, 2);
    await probe.more(10);
    await probe.stop();
    process.stdout.write(`# relay probes: ${probe.ok} answered, ${probe.failures.length} failed${probe.failures.length > 0 ? ` (${probe.failures.join(', ')})` : ''}\n`);
    // (Almost) nothing lost across two failovers and a failback. A loose bound, for a busy
    // machine: a relay that did not follow vip-a would fail every probe until the wait
    // above gave up.
    assert.ok(probe.failures.length <= 5, `failed probes: ${probe.failures.join(', ')}\n${out}`);
    assert.match(out, /\[relay\] vip-a now at lb2[^\n]*\d+ served, [0-5] failed/);
  } finally {
    await probe?.stop();
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      child.kill('SIGINT');
      // Bounded: a demo that does not stop is killed, so no run leaves it behind, and fails below.
      const t = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
    }
  }
  assert.equal(child.exitCode, 0);
});
