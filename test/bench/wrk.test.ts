// wrk as the benchmark's second load generator: its summary, printed by the Lua `done()`
// hook of bench/load.ts, read back from real wrk runs against a real node:http server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadMissing, parseWrk, startLoad, type Measured } from '../../bench/load.ts';
import { skipUnlessCi } from '../helpers/requirements.ts';

const skip = skipUnlessCi(loadMissing('wrk'));
const BODY = Buffer.from('x'.repeat(100));
const CONNECTIONS = 4;

/** Answers 200 with BODY, or 503 on /fail, and counts what it answered. */
async function origin(): Promise<{ server: Server; url: string; served: () => number }> {
  let served = 0;
  const server = createServer((req, res) => {
    served++;
    res.writeHead(req.url === '/fail' ? 503 : 200, { 'content-length': BODY.length });
    res.end(BODY);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, served: () => served };
}

async function withWrk(fn: (run: (url: string) => Promise<Measured>) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-wrk-test-'));
  const wrk = await startLoad('wrk', dir);
  try {
    await fn((url) => wrk.run(url, CONNECTIONS, 1));
  } finally {
    await wrk.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a 1 s wrk run reports the requests the origin answered, their rate, bytes and ordered latency percentiles', { skip, timeout: 20_000 }, async () => {
  const o = await origin();
  try {
    await withWrk(async (run) => {
      const m = await run(o.url + '/');
      // wrk counts completed responses; at the end each connection may have one more in flight.
      assert.ok(m.requests > 0, 'no request completed');
      assert.ok(m.requests <= o.served() && m.requests >= o.served() - CONNECTIONS, `wrk counted ${m.requests}, the origin answered ${o.served()}`);
      assert.ok(m.durationSeconds >= 0.9 && m.durationSeconds < 10, `duration ${m.durationSeconds} s`);
      assert.ok(Math.abs(m.rps * m.durationSeconds - m.requests) < 1, 'rps is requests over the measured duration');
      assert.ok(m.bytesPerSecond * m.durationSeconds >= m.requests * BODY.length, 'bytes include every body');
      const l = m.latency;
      assert.ok(l.p50 > 0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max, `percentiles out of order: ${JSON.stringify(l)}`);
      assert.ok(l.mean > 0 && l.mean <= l.max);
      // Milliseconds, from wrk's microseconds: a local request takes well under a second.
      assert.ok(l.p50 < 1000, `p50 ${l.p50} ms`);
      assert.deepEqual([m.errors, m.timeouts, m.non2xx], [0, 0, 0]);
    });
  } finally {
    o.server.closeAllConnections();
    o.server.close();
  }
});

test('answers of 500 and above from a wrk run count as non-2xx, every one of them', { skip, timeout: 20_000 }, async () => {
  const o = await origin();
  try {
    await withWrk(async (run) => {
      const m = await run(o.url + '/fail');
      assert.ok(m.requests > 0);
      assert.equal(m.non2xx, m.requests);
      assert.equal(m.errors, 0);
    });
  } finally {
    o.server.closeAllConnections();
    o.server.close();
  }
});

test('wrk output without the summary line is refused with that output, not read as zeros', () => {
  const out = 'unable to connect to 127.0.0.1:1 Connection refused\n';
  assert.throws(() => parseWrk(out), (err: Error) => err.message.includes('no summary line') && err.message.includes(out.trim()));
  assert.throws(() => parseWrk('{"tandem-bench-wrk":1,"durationMicros":1000000,"requests":-1}\n'), /no valid requests/);
});
