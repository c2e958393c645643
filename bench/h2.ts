// The HTTP/2 case of the benchmark: TLS and HTTP/2 terminated by tandem, side by side in
// one run with HAProxy and nginx terminating the same (when they are installed), all in
// front of the same origin over HTTP/1.1, loaded by h2load (Debian's nghttp2-client).
//
//   node bench/h2.ts [--rounds N] [--requests N]
//
// Each round runs every target once, in a rotated order; the report gives each target's
// median req/s and tandem's ratio to it. Absolute figures depend on the machine; ratios
// within one run are what to compare.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startBackend } from './backend.ts';
import { findBinary, freePort, startHaproxy, startNginx, type NativeTls } from './targets/native.ts';
import { spawnService, type Service } from './targets/process.ts';

const ROOT = resolve(import.meta.dirname, '..');

interface Target {
  readonly id: string;
  readonly port: number;
  stop(): Promise<void>;
}

function h2load(port: number, requests: number): number {
  const out = execFileSync('h2load', ['-n', String(requests), '-c', '10', '-m', '10', '-t', '1', `https://127.0.0.1:${port}/`], { encoding: 'utf8', timeout: 120_000 });
  const m = /finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out);
  const done = /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded/.exec(out);
  if (m === null || done === null) throw new Error(`h2load output not understood:\n${out}`);
  if (Number(done[2]) !== requests) throw new Error(`only ${done[2]} of ${requests} requests succeeded:\n${out}`);
  return Number(m[1]);
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, requests: { type: 'string', default: '20000' } } });
  const rounds = Number(values.rounds);
  const requests = Number(values.requests);
  if (findBinary('h2load') === null) {
    process.stderr.write('bench/h2.ts: h2load is not installed (Debian: apt-get install nghttp2-client)\n');
    process.exit(1);
  }
  const dir = mkdtempSync(join(tmpdir(), 'tandem-bench-h2-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=localhost',
    '-keyout', key, '-out', cert], { stdio: 'ignore' });
  const tls: NativeTls = { cert, key, combined: join(dir, 'combined.pem') };
  writeFileSync(tls.combined, readFileSync(cert, 'utf8') + readFileSync(key, 'utf8'));
  const origin = await startBackend(1);
  const upstream = origin.urls[0].slice('http://'.length);
  const targets: Target[] = [];
  try {
    const tport = await freePort();
    writeFileSync(join(dir, 'tandem.yaml'), `workers: 1
shutdownTimeout: 1s
listeners:
  - { name: h2, address: 127.0.0.1:${tport}, http2: true, tls: { cert: ${cert}, key: ${key} } }
routes: [{ name: all, pool: app }]
pools: { app: { backends: [{ name: app1, url: "http://${upstream}" }] } }
admin: false
`);
    const tandem: Service = await spawnService([join(ROOT, 'src/cli.ts'), 'run', '-c', join(dir, 'tandem.yaml')], { ready: /"event":"start"/ });
    targets.push({ id: 'tandem', port: tport, stop: () => tandem.stop() });

    for (const [id, start] of [['haproxy', startHaproxy], ['nginx', startNginx]] as const) {
      if (findBinary(id) === null) continue;
      const port = await freePort();
      const service = await start({ dir, port, upstream, tls });
      targets.push({ id, port, stop: () => service.stop() });
    }

    // Warm-up, unrecorded.
    for (const t of targets) h2load(t.port, Math.min(2000, requests));
    const results = new Map<string, number[]>(targets.map((t) => [t.id, []]));
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < targets.length; i++) {
        const t = targets[(i + round) % targets.length];
        const rps = h2load(t.port, requests);
        results.get(t.id)!.push(rps);
        process.stdout.write(`round ${round + 1} ${t.id.padEnd(8)} ${rps.toFixed(0)} req/s\n`);
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const subject = median(results.get('tandem')!);
    process.stdout.write(`\nHTTP/2 over TLS, h2load -c 10 -m 10, ${requests} requests, median of ${rounds} rounds, one worker/thread each\n`);
    process.stdout.write('| target | req/s | tandem ÷ target |\n|---|--:|--:|\n');
    for (const [id, xs] of results) process.stdout.write(`| ${id} | ${median(xs).toFixed(0)} | ${(subject / median(xs)).toFixed(2)}× |\n`);
  } finally {
    for (const t of targets) await t.stop();
    await origin.service.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) await main();
