import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const GIB = 1024 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 120);

/** Peak resident set of a process, in bytes (VmHWM: the high-water mark since start). */
function peakRss(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmHWM:\s+(\d+) kB/);
  return Number(m![1]) * 1024;
}

/** A readable of `total` bytes made from one reused chunk. */
function source(total: number): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= total) { this.push(null); return; }
      const n = Math.min(CHUNK.length, total - sent);
      sent += n;
      this.push(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
    },
  });
}

let server: Server;
let t: TandemProcess;
after(async () => {
  await t?.stop();
  server?.closeAllConnections();
  server?.close();
});

test('a 1 GiB upload and a 1 GiB download stream through tandem with its RSS under 150 MB', async (t0) => {
  server = createServer((req, res) => {
    if (req.url === '/download') {
      res.writeHead(200, { 'content-length': String(GIB) });
      source(GIB).pipe(res);
      return;
    }
    let received = 0;
    req.on('data', (d: Buffer) => { received += d.length; });
    req.on('end', () => res.end(String(received)));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t = await startTandem(singlePool([{ name: 'bulk', url }], { timeouts: { response: '60s' } }));
  // The worker is the data plane that streams; the primary only supervises.
  const [worker] = t.workerPids();
  const baseline = peakRss(worker);

  const up = await request(`${t.url}/upload`, { method: 'POST', body: source(GIB), headers: { 'content-length': String(GIB) } });
  assert.equal(up.statusCode, 200);
  assert.equal(await up.body.text(), String(GIB));

  const down = await request(`${t.url}/download`);
  assert.equal(down.statusCode, 200);
  let got = 0;
  for await (const chunk of down.body) got += (chunk as Buffer).length;
  assert.equal(got, GIB);

  const peak = peakRss(worker);
  t0.diagnostic(`worker peak RSS ${(peak / 1048576).toFixed(0)} MB, ${(baseline / 1048576).toFixed(0)} MB at start`);
  assert.ok(peak < 150 * 1024 * 1024, `peak RSS ${(peak / 1048576).toFixed(0)} MB (at start ${(baseline / 1048576).toFixed(0)} MB)`);
});
