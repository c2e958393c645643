import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { stringify } from 'yaml';
import { HolderRelay } from './demo-relay.ts';

// `tandem demo`: three demo backends and an active-active pair of tandem instances on
// loopback, the VIP hook in log-only mode. Both instances read one config file, as a
// real pair does; what differs between them (their listen and admin addresses, since
// both live on one host here) comes from the environment. A VIP cannot move on one
// host, so a relay (./demo-relay.ts) gives the user one address that follows vip-a.

const RESTART_DELAY = 5000;
const STOP_TIMEOUT = 15_000;
const RELAY = { host: '127.0.0.1', port: 8088 };

const NODES = [
  { id: 'lb1', listen: '127.0.0.1:8080', admin: '127.0.0.1:9901', peer: '127.0.0.1:7946' },
  { id: 'lb2', listen: '127.0.0.1:8081', admin: '127.0.0.1:9902', peer: '127.0.0.1:7947' },
];

async function demoBackend(name: string): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/healthz') {
      res.end('ok');
      return;
    }
    const body = JSON.stringify({ backend: name, method: req.method, path: req.url, forwardedFor: req.headers['x-forwarded-for'] ?? null }) + '\n';
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return server;
}

/** The demo's config: one file for both nodes. */
export function demoConfig(backends: readonly { name: string; url: string }[]): string {
  return stringify({
    // The demo prints each instance's lines for a person, prefixed with its node.
    log: { format: 'pretty' },
    listeners: [{ name: 'web', address: '${TANDEM_DEMO_LISTEN:-127.0.0.1:8080}' }],
    routes: [{ name: 'default', match: { pathPrefix: '/' }, pool: 'web' }],
    pools: {
      web: {
        backends: backends.map((b, i) => ({ name: b.name, url: b.url, weight: i === 0 ? 2 : 1 })),
        healthCheck: { path: '/healthz', interval: '1s', timeout: '500ms', rise: 2, fall: 2 },
      },
    },
    admin: { address: '${TANDEM_DEMO_ADMIN:-127.0.0.1:9901}' },
    ha: {
      store: 'peer',
      secret: '${TANDEM_HA_SECRET:-demo-secret-change-me-0123456789}',
      nodes: Object.fromEntries(NODES.map((n) => [n.id, { address: n.peer }])),
      lease: { duration: '1s', renewEvery: '200ms' },
      vips: [
        { name: 'vip-a', address: '192.0.2.10/24', interface: 'lo', priority: { lb1: 150, lb2: 100 }, preempt: { delay: '3s' } },
        { name: 'vip-b', address: '192.0.2.11/24', interface: 'lo', priority: { lb1: 100, lb2: 150 }, preempt: { delay: '3s' } },
      ],
    },
  });
}

/** Runs the demo until Ctrl-C; resolves with the exit code. */
export async function demo(): Promise<number> {
  const servers = await Promise.all(['app1', 'app2', 'app3'].map(demoBackend));
  const backends = servers.map((s, i) => ({ name: `app${i + 1}`, url: `http://127.0.0.1:${(s.address() as AddressInfo).port}` }));
  const dir = mkdtempSync(join(tmpdir(), 'tandem-demo-'));
  const file = join(dir, 'tandem.yaml');
  writeFileSync(file, demoConfig(backends));
  // cli.ts in the source tree, cli.js in the compiled package (dist/).
  const cli = resolve(import.meta.dirname, `cli${extname(import.meta.filename)}`);
  const children = new Map<string, ChildProcess>();
  let stopping = false;
  const start = (n: (typeof NODES)[number]) => {
    const child = spawn(process.execPath, [cli, 'run', '-c', file, '--node', n.id], {
      env: { ...process.env, TANDEM_DEMO_LISTEN: n.listen, TANDEM_DEMO_ADMIN: n.admin },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (children.has(n.id)) process.stdout.write(`[demo] ${n.id} started again, pid ${child.pid}\n`);
    const prefix = (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) if (line !== '') process.stdout.write(`[${n.id}] ${line}\n`);
    };
    child.stdout!.on('data', prefix);
    child.stderr!.on('data', prefix);
    child.on('exit', (code, signal) => {
      process.stdout.write(`[${n.id}] exited (${signal ?? code})\n`);
      if (stopping) return;
      // Bring a stopped node back, so the demo shows failback after the preempt delay too.
      process.stdout.write(`[demo] restarting ${n.id} in ${RESTART_DELAY / 1000} s\n`);
      setTimeout(() => { if (!stopping) start(n); }, RESTART_DELAY).unref();
    });
    children.set(n.id, child);
  };
  for (const n of NODES) start(n);
  const relay = new HolderRelay({
    vip: 'vip-a',
    ...RELAY,
    nodes: NODES.map((n) => ({ id: n.id, admin: `http://${n.admin}`, host: n.listen.split(':')[0], port: Number(n.listen.split(':')[1]) })),
    log: (line) => process.stdout.write(`[relay] ${line}\n`),
  });
  await relay.start();
  const url = `http://${RELAY.host}:${RELAY.port}/`;
  const lb1 = children.get('lb1')!.pid;

  process.stdout.write(`tandem demo: config ${file}
  backends      ${backends.map((b) => `${b.name} ${b.url}`).join(', ')}
  lb1           http://${NODES[0].listen}/   admin http://${NODES[0].admin}/status
  lb2           http://${NODES[1].listen}/   admin http://${NODES[1].admin}/status
  VIPs          vip-a (prefers lb1), vip-b (prefers lb2); the hook is log-only here
  relay         ${url}   follows vip-a: each new connection goes to the node whose admin API says it holds vip-a
Probe it, one character per request (. answered, x failed):
      while :; do curl -s -m 2 -o /dev/null ${url} && printf . || printf x; sleep 0.05; done
Then stop lb1, the holder of vip-a, either way:
      kill -9 ${lb1}   or   kill ${lb1}
  lb2 takes vip-a, the relay follows it, and the probe keeps printing dots; the [relay] lines
  below count the connections that failed. The demo restarts lb1 after ${RESTART_DELAY / 1000} s; it takes vip-a
  back after its 3 s preempt delay. Ctrl-C stops everything.

`);

  return new Promise<number>((resolveExit) => {
    const stop = () => {
      if (stopping) return;
      stopping = true;
      relay.close();
      // A child killed by a signal has no exit code but its signal: it has exited too.
      const running = [...children.values()].filter((c) => c.exitCode === null && c.signalCode === null);
      const exits = running.map((c) => once(c, 'exit'));
      for (const c of running) c.kill('SIGTERM');
      // Bounded: a node that does not finish its graceful stop in time is killed.
      const force = setTimeout(() => { for (const c of running) c.kill('SIGKILL'); }, STOP_TIMEOUT);
      Promise.all(exits).then(() => {
        clearTimeout(force);
        for (const s of servers) {
          s.close();
          s.closeAllConnections();
        }
        rmSync(dir, { recursive: true, force: true });
        resolveExit(0);
      });
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
