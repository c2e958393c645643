// A real etcd for tests: Debian's etcd-server, started on loopback ports in a temp dir,
// as one member or a cluster of several. etcd cannot bind port 0, so free ports are
// picked first. Heartbeat 50 ms and election timeout 500 ms keep elections short and let
// etcd grant 1 s leases (its minimum TTL is 1.5 election timeouts, rounded up to seconds).
//
//   const skip = etcdSkip();                     // a reason to skip, or false (CI=true: never skips)
//   const etcd = await startEtcd({ members: 3 });   // or { tls: makeCerts(dir) }: HTTPS, client certificates required
//   etcd.endpoints;                              // http://127.0.0.1:port, one per member
//   await etcd.members[0].kill('SIGKILL'); await etcd.members[0].start();
//   await etcd.close();                          // kills every member, removes the temp dir

import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, closeSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';

export const ETCD = process.env.TANDEM_ETCD ?? 'etcd';

let cachedReason: string | null | undefined;

/** Why a real etcd cannot run here, or null when it can. */
export function etcdUnavailable(): string | null {
  if (cachedReason !== undefined) return cachedReason;
  const r = spawnSync(ETCD, ['--version'], { encoding: 'utf8' });
  cachedReason = r.status === 0 ? null : `${ETCD} is not installed (apt-get install etcd-server): ${r.error?.message ?? r.stderr}`;
  return cachedReason;
}

/** The `skip` option for tests that need etcd: the reason, or false. With CI=true they run and fail with the reason. */
export function etcdSkip(): string | false {
  if (process.env.CI === 'true') return false;
  return etcdUnavailable() ?? false;
}

export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dir: string;
  readonly process: ChildProcess | null;
  /** Starts the member (again, on its data dir). */
  start(): Promise<void>;
  /** Sends `signal` and, unless it is SIGSTOP/SIGCONT, waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Its log so far. */
  log(): string;
}

export interface EtcdCluster {
  readonly endpoints: string[];
  readonly members: EtcdMember[];
  /** The member that is raft leader now, as the live members report it. */
  leader(): Promise<EtcdMember>;
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

/**
 * PEM files of a throw-away CA, an etcd server certificate for 127.0.0.1 and a client
 * certificate. The server certificate is good for client auth too: with
 * --client-cert-auth, etcd's JSON gateway connects to its own gRPC server with it.
 */
export interface TestCerts {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
}

/** Makes TestCerts with openssl in `dir`. */
export function makeCerts(dir: string): TestCerts {
  const f = (name: string) => join(dir, name);
  const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl('req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=tandem test CA');
  for (const [name, ext] of [['server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n'], ['client', 'extendedKeyUsage=clientAuth\n']]) {
    ossl('req', ...ec, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=tandem test ${name}`);
    writeFileSync(f(`${name}.ext`), ext);
    ossl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f(`${name}.pem`), '-days', '2', '-extfile', f(`${name}.ext`));
  }
  return { ca: f('ca.pem'), serverCert: f('server.pem'), serverKey: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

/** Starts a cluster of `members` (default 1) and waits until every member is healthy; with `tls`, clients must use HTTPS and a client certificate. */
export async function startEtcd(opts: { members?: number; tls?: TestCerts } = {}): Promise<EtcdCluster> {
  const reason = etcdUnavailable();
  if (reason !== null) throw new Error(`a real etcd is needed: ${reason}`);
  const count = opts.members ?? 1;
  const root = mkdtempSync(join(tmpdir(), 'tandem-etcd-'));
  const specs: { name: string; client: number; peer: number }[] = [];
  for (let i = 0; i < count; i++) specs.push({ name: `m${i + 1}`, client: await freePort(), peer: await freePort() });
  const initialCluster = specs.map((s) => `${s.name}=http://127.0.0.1:${s.peer}`).join(',');
  const token = `tandem-${process.pid}-${Date.now()}`;
  const members = specs.map((s) => member(root, s.name, s.client, s.peer, initialCluster, token, opts.tls ?? null));
  await Promise.all(members.map((m) => m.start()));
  return {
    endpoints: members.map((m) => m.clientUrl),
    members,
    leader: async () => {
      for (const m of members) {
        try {
          const res = await fetch(`${m.clientUrl}/v3/maintenance/status`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(2000) });
          const st = (await res.json()) as { leader?: string; header?: { member_id?: string } };
          if (st.leader !== undefined && st.leader === st.header?.member_id) return m;
        } catch {
          // down: ask the next
        }
      }
      throw new Error('no etcd member says it is the leader');
    },
    close: async () => {
      await Promise.all(members.map((m) => m.kill('SIGKILL')));
      rmSync(root, { recursive: true, force: true });
    },
  };
}

function member(root: string, name: string, clientPort: number, peerPort: number, initialCluster: string, token: string, tls: TestCerts | null): EtcdMember {
  const clientUrl = `${tls === null ? 'http' : 'https'}://127.0.0.1:${clientPort}`;
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const dir = join(root, name);
  const logFile = join(root, `${name}.log`);
  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  const self: EtcdMember = {
    name,
    clientUrl,
    peerUrl,
    dir,
    get process() {
      return child;
    },
    start: async () => {
      const fd = openSync(logFile, 'a');
      const args = [
        '--name', name, '--data-dir', dir,
        '--listen-client-urls', clientUrl, '--advertise-client-urls', clientUrl,
        '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
        '--initial-cluster', initialCluster, '--initial-cluster-token', token, '--initial-cluster-state', 'new',
        '--heartbeat-interval', '50', '--election-timeout', '500',
        '--logger', 'zap', '--log-outputs', 'stderr',
        ...(tls === null ? [] : ['--cert-file', tls.serverCert, '--key-file', tls.serverKey, '--trusted-ca-file', tls.ca, '--client-cert-auth']),
      ];
      const p = spawn(ETCD, args, { stdio: ['ignore', fd, fd] });
      closeSync(fd);
      child = p;
      live.add(p);
      exited = new Promise((resolve) => p.once('exit', () => {
        live.delete(p);
        resolve();
      }));
      await waitHealthy(self, p, tls);
    },
    kill: async (signal = 'SIGKILL') => {
      const p = child;
      if (p === null || p.exitCode !== null || p.signalCode !== null) return;
      p.kill(signal);
      if (signal === 'SIGSTOP' || signal === 'SIGCONT') return;
      await exited;
    },
    log: () => {
      try {
        return readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
  };
  return self;
}

/**
 * Waits until the member answers on its client URL. A member of a cluster whose peers
 * are not up yet answers only once a leader is elected, which needs the others, so the
 * members are started together and each waits for its own answer.
 */
async function waitHealthy(m: EtcdMember, p: ChildProcess, tls: TestCerts | null, ms = 30_000): Promise<void> {
  const dispatcher = new Agent(tls === null ? {} : { connect: { ca: readFileSync(tls.ca), cert: readFileSync(tls.clientCert), key: readFileSync(tls.clientKey) } });
  const t0 = performance.now();
  try {
    while (performance.now() - t0 < ms) {
      if (p.exitCode !== null || p.signalCode !== null) throw new Error(`etcd ${m.name} exited during start:\n${m.log().slice(-2000)}`);
      try {
        const res = await request(`${m.clientUrl}/health`, { dispatcher, signal: AbortSignal.timeout(1000) });
        const body = (await res.body.json()) as { health?: string };
        if (body.health === 'true') return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`etcd ${m.name} did not become healthy within ${ms} ms:\n${m.log().slice(-2000)}`);
  } finally {
    await dispatcher.close();
  }
}
