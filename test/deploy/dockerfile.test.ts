// The Dockerfile, parsed with dockerfile-ast and its runtime stage run for real (see
// image.ts): the production install from the packed tarball, then the proxy's exact
// ENTRYPOINT and CMD as its non-root USER with deploy/tandem.yaml mounted at
// /etc/tandem/tandem.yaml and compose's environment for lb1, in a network namespace laid
// out as deploy/compose.yaml lays out its network; the HEALTHCHECK command in the same
// place; then the vip-agent target as its sidecar, as root with only NET_ADMIN and
// NET_RAW in the proxy's network namespace.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { Lab, netnsUnavailable } from '../helpers/netns.ts';
import { imageConfig, ImageRoot, readStages, type ImageConfig, type SandboxRun } from './image.ts';
import { missingCommand, skipUnless } from './needs.ts';
import { copyTree, must, NODE_DIR, ROOT } from './pack.ts';

// Docker's own matching rules for .dockerignore (the package declares an ES default export it does not have).
const dockerignore = createRequire(import.meta.url)('@balena/dockerignore') as typeof import('@balena/dockerignore').default;
const stages = readStages(await readFile(join(ROOT, 'Dockerfile'), 'utf8'));
const proxy = imageConfig(stages, 'proxy');
const agent = imageConfig(stages, 'vip-agent');
// Compose reads YAML merge keys (<<: *proxy).
const compose = parse(await readFile(join(ROOT, 'deploy/compose.yaml'), 'utf8'), { merge: true }) as {
  services: Record<string, { environment?: Record<string, string>; networks?: Record<string, { ipv4_address: string }>; cap_add?: string[]; cap_drop?: string[]; user?: string; network_mode?: string }>;
};
const config = parse(await readFile(join(ROOT, 'deploy/tandem.yaml'), 'utf8')) as {
  listeners: { address: string }[];
  admin: { address: string };
  ha: { vips: { address: string }[] };
};
const port = (address: string) => Number(address.slice(address.lastIndexOf(':') + 1));
const ADMIN_PORT = port(config.admin.address);
const LISTEN_PORT = port(config.listeners[0].address);
const TOKEN = 'an-admin-token-for-the-image-test';
const SECRET = 'an-ha-secret-for-the-image-test';

/** A compose service's environment with its ${VAR:?...} references filled in. */
function envOf(service: string): Record<string, string> {
  const vars: Record<string, string> = { TANDEM_ADMIN_TOKEN: TOKEN, TANDEM_HA_SECRET: SECRET };
  return Object.fromEntries(Object.entries(compose.services[service].environment ?? {})
    .map(([k, v]) => [k, String(v).replace(/\$\{(\w+)(:\?[^}]*)?\}/g, (_m, name: string) => vars[name] ?? assert.fail(`no test value for ${name}`))]));
}

test('the Dockerfile has a build stage and the runtime, vip-agent and proxy targets, proxy last (the default), on node:24-slim', () => {
  assert.deepEqual(stages.map((s) => s.name), ['build', 'runtime', 'vip-agent', 'proxy']);
  assert.deepEqual(stages.map((s) => s.base), ['node:24-slim', 'node:24-slim', 'runtime', 'runtime']);
  const build = imageConfig(stages, 'build');
  assert.equal(build.workdir, '/src');
  assert.equal(build.runs[0], 'npm ci --no-audit --no-fund', 'the test puts the checkout\'s node_modules in its place');
  assert.match(build.runs[1], /^npm run typecheck\s+&& mkdir \/pkg\s+&& npm pack --pack-destination \/pkg\s+&& mv \/pkg\/tandem-\*\.tgz \/pkg\/tandem\.tgz$/);
  assert.deepEqual(proxy.copies, [['build', '/pkg/tandem.tgz', '/tmp/tandem.tgz']], 'the runtime takes only the packed tarball from the build');
});

test('.dockerignore keeps tests, benchmarks, local state and secrets out of the context, and what the build needs in', async () => {
  const ignore = dockerignore({ ignorecase: false }).add(await readFile(join(ROOT, '.dockerignore'), 'utf8'));
  for (const out of ['test/cli.test.ts', 'bench/run.ts', '.git/config', 'node_modules/yaml/package.json', 'dist/cli.js', '.env', '.env.production', 'conf/certs/web.key', 'conf/certs/web.pem', 'deploy/kubernetes/secret.yaml', 'tandem-0.1.0.tgz']) {
    assert.ok(ignore.ignores(out), `${out} is in the build context`);
  }
  for (const kept of ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'src/cli.ts', 'bin/tandem.js', 'scripts/vip-hook.sh', 'conf/single.yaml', 'deploy/tandem.yaml', 'README.md', 'LICENSE']) {
    assert.equal(ignore.ignores(kept), false, `${kept} is left out of the build context`);
  }
});

test('the proxy image: non-root by number, tini as PID 1, a HEALTHCHECK on /healthz, only the default ports, no network tools', () => {
  assert.match(proxy.user, /^[1-9]\d*:[1-9]\d*$/, 'a numeric non-root USER, which runAsNonRoot can verify');
  assert.deepEqual(proxy.entrypoint.slice(0, 2), ['/usr/bin/tini', '--']);
  assert.ok(proxy.apt.includes('tini'));
  assert.deepEqual(proxy.expose.sort(), [LISTEN_PORT, ADMIN_PORT].sort());
  assert.ok(proxy.healthcheck?.join(' ').includes(`127.0.0.1:${ADMIN_PORT}/healthz`));
  assert.equal(proxy.env.NODE_ENV, 'production');
  for (const tool of ['iproute2', 'iputils-arping']) {
    assert.equal(proxy.apt.includes(tool), false, `the proxy image carries ${tool}`);
    assert.ok(agent.apt.includes(tool), `the vip-agent image lacks ${tool}`);
  }
  assert.equal(agent.user, '0:0');
  assert.deepEqual(agent.runs, proxy.runs, 'both targets install the same package');
});

const skip = skipUnless(netnsUnavailable() ?? await missingCommand({ cmd: 'bwrap', pkg: 'bubblewrap' }, { cmd: 'tini', pkg: 'tini' }, { cmd: 'setpriv', pkg: 'util-linux' }), 'the image run');

describe('the image, run', { skip }, () => {
  let dir = '';
  let lab: Lab;
  let lb1 = '';
  let client = '';
  let root: ImageRoot;
  let proxyRun: SandboxRun | null = null;
  let agentRun: SandboxRun | null = null;
  const lb1Address = compose.services.lb1.networks!.tandem.ipv4_address;

  before(async () => {
    for (const pkg of new Set([...proxy.apt, ...agent.apt])) {
      await must('dpkg-query', ['-W', '-f=${Status}', pkg]).catch(() => assert.fail(`${pkg}, which the image installs with apt-get, is not installed here`));
    }
    dir = await mkdtemp(join(tmpdir(), 'tandem-image-'));
    await chmod(dir, 0o755);
    // The build stage: the context as .dockerignore cuts it in its WORKDIR, the
    // checkout's node_modules standing for its `npm ci` (same lock file), then its other
    // RUN lines as written: the type check and `npm pack` into /pkg.
    const build = imageConfig(stages, 'build');
    await mkdir(join(dir, 'build'));
    const builder = await ImageRoot.create(join(dir, 'build'), { hosts: [], files: { [`${build.workdir}/node_modules`]: join(ROOT, 'node_modules') } });
    const ignore = dockerignore({ ignorecase: false }).add(await readFile(join(ROOT, '.dockerignore'), 'utf8'));
    await copyTree(join(dir, 'build', build.workdir), (path) => !ignore.ignores(path));
    for (const line of build.runs.slice(1)) {
      const r = await builder.runLine(line, build);
      assert.equal(r.code, 0, `RUN ${line}\n${r.stdout}\n${r.stderr}`);
    }
    const [[, built]] = proxy.copies;
    const tgz = join(dir, 'build', built);

    lab = await Lab.create();
    lb1 = await lab.host('lb1', `${lb1Address}/24`);
    client = await lab.host('client', '172.28.0.2/24');
    const hosts: string[] = [];
    for (const app of ['app1', 'app2']) {
      const address = compose.services[app].networks!.tandem.ipv4_address;
      hosts.push(`${address} ${app}`);
      const ns = await lab.host(app, `${address}/24`);
      await startDemoBackend(lab, ns, app);
    }
    await mkdir(join(dir, 'root'));
    root = await ImageRoot.create(join(dir, 'root'), { hosts, files: { '/etc/tandem/tandem.yaml': join(ROOT, 'deploy/tandem.yaml') } });
    await root.put(tgz, '/tmp/tandem.tgz');
    for (const line of proxy.runs) {
      const r = await root.runLine(line, proxy);
      assert.equal(r.code, 0, `RUN ${line}\n${r.stdout}\n${r.stderr}`);
    }
  });

  after(async () => {
    proxyRun?.child.kill('SIGKILL');
    agentRun?.child.kill('SIGKILL');
    await lab?.destroy();
    if (dir !== '') await rm(dir, { recursive: true, force: true });
  });

  const inImage = (image: ImageConfig, extra: Record<string, string>) => ({ ...image.env, ...extra });
  const fromClient = async (url: string): Promise<{ status: number; body: string }> => {
    const script = 'fetch(process.argv[1]).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { console.error(e.cause ?? e); process.exit(1); })';
    const out = await lab.must(client, [join(NODE_DIR, 'node'), '-e', script, url]);
    return JSON.parse(out) as { status: number; body: string };
  };
  const vipsOnEth0 = async () => {
    const out = await lab.must(lb1, ['ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0']);
    return config.ha.vips.map((v) => v.address).filter((a) => out.includes(` ${a} `));
  };
  async function until(what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}\nproxy:\n${proxyRun?.output()}\nagent:\n${agentRun?.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  test('ENTRYPOINT and CMD as the image\'s user: tandem serves through the backends, the HEALTHCHECK exits 0, Prometheus can scrape, SIGHUP reloads', async () => {
    proxyRun = root.start([...proxy.entrypoint, ...proxy.cmd], { netns: lb1, user: proxy.user, env: inImage(proxy, envOf('lb1')) });
    await until('tandem to start', async () => proxyRun!.output().includes('"event":"start"'), 60_000);
    const pid = await proxyRun.pid;
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    assert.match(status, /^Uid:\s+1000\s+1000\s+1000\s+1000$/m, 'PID 1 runs as the image user');
    assert.match(status, /^CapEff:\s+0+$/m, 'with no capability');

    const health = await root.exec(proxy.healthcheck!, { netns: lb1, user: proxy.user, env: inImage(proxy, {}) });
    assert.equal(health.code, 0, `HEALTHCHECK failed: ${health.output}`);

    const seen = new Set<string>();
    await until('both backends to answer through tandem', async () => {
      const r = await fromClient(`http://${lb1Address}:${LISTEN_PORT}/`);
      if (r.status === 200) seen.add(r.body.split('\n')[0]);
      return seen.size === 2;
    }, 30_000);
    assert.deepEqual([...seen].sort(), ['Name: app1', 'Name: app2']);
    assert.equal((await fromClient(`http://${lb1Address}:${ADMIN_PORT}/readyz`)).status, 200);

    // The dashboard's metrics are all in a scrape from another host, as Prometheus makes it.
    const metrics = (await fromClient(`http://${lb1Address}:${ADMIN_PORT}/metrics`)).body;
    const dashboard = await readFile(join(ROOT, 'deploy/grafana/dashboards/tandem.json'), 'utf8');
    const used = new Set([...dashboard.matchAll(/\b((?:tandem|process)_[a-z_]+?)(?:_bucket)?\b(?=[{\s)\[])/g)].map((m) => m[1]));
    assert.ok(used.size >= 8, `the dashboard queries only ${[...used].join(', ')}`);
    for (const name of used) assert.match(metrics, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is not in tandem's /metrics`);

    // docker kill -s HUP: tini, PID 1, passes it on and tandem reloads its config.
    const from = proxyRun.output().length;
    process.kill(pid, 'SIGHUP');
    await until('the reload', async () => /"event":"reload","result":"success"/.test(proxyRun!.output().slice(from)), 15_000);
  });

  test('the vip-agent target beside it, as root with only NET_ADMIN and NET_RAW: both VIPs go up through the announcer kept warm; SIGTERM to the proxy takes them down, and nothing is left behind', async () => {
    assert.ok(proxyRun !== null, 'the proxy runs');
    const sidecar = compose.services['lb1-vip'];
    assert.equal(sidecar.network_mode, 'service:lb1');
    assert.deepEqual(sidecar.cap_drop, ['ALL']);
    assert.equal(sidecar.user, agent.user);
    agentRun = root.start([...agent.entrypoint, ...agent.cmd], { netns: lb1, user: agent.user, caps: sidecar.cap_add, env: inImage(agent, { TANDEM_ADMIN_TOKEN: TOKEN }) });
    const pid = await agentRun.pid;
    // bwrap's child drops its capabilities, then becomes the ENTRYPOINT.
    await until('the sidecar\'s ENTRYPOINT to start', async () => (await readFile(`/proc/${pid}/cmdline`, 'utf8')).startsWith(agent.entrypoint[0] + '\0'), 10_000);
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    // CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13.
    assert.match(status, /^CapEff:\s+0000000000003000$/m, 'exactly NET_ADMIN and NET_RAW');
    assert.match(status, /^CapBnd:\s+0000000000003000$/m);

    // lb2 never answers, so lb1 holds both VIPs once their leases are free.
    await until('both VIPs on eth0', async () => (await vipsOnEth0()).length === 2, 30_000);
    const r = await fromClient(`http://${config.ha.vips[0].address.split('/')[0]}:${LISTEN_PORT}/`);
    assert.equal(r.status, 200);
    // The built-in hook (the image's default) keeps its announcer running under the agent:
    // tini, then node (the agent), then perl.
    let announcers: number[] = [];
    await until('the announcer under the agent', async () => {
      announcers = (await descendants(pid)).filter((c) => c.cmdline.includes('vip-announcer')).map((c) => c.pid);
      return announcers.length > 0;
    }, 10_000);

    process.kill(await proxyRun.pid, 'SIGTERM');
    assert.equal(await proxyRun.exited, 0, proxyRun.output());
    await until('both VIPs gone', async () => (await vipsOnEth0()).length === 0, 15_000);
    const zombies = (await descendants(pid)).filter((c) => c.state === 'Z');
    assert.deepEqual(zombies, [], 'PID 1 leaves no zombie behind');

    process.kill(pid, 'SIGTERM');
    assert.equal(await agentRun.exited, 0, agentRun.output());
    // The announcer ends when the agent closes its stdin.
    await until('no announcer left', async () => announcers.every((a) => !existsSync(`/proc/${a}`)), 10_000);
  });
});

/** Every process below `pid` (children, their children, ...), with state and command line. */
async function descendants(pid: number): Promise<{ pid: number; state: string; cmdline: string }[]> {
  const found: { pid: number; state: string; cmdline: string }[] = [];
  for (let level = await children(pid), depth = 0; level.length > 0 && depth < 8; depth++) {
    found.push(...level);
    level = (await Promise.all(level.map((c) => children(c.pid)))).flat();
  }
  return found;
}

/** The processes whose parent is `pid`, with their state and command line. */
async function children(pid: number): Promise<{ pid: number; state: string; cmdline: string }[]> {
  const found: { pid: number; state: string; cmdline: string }[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses.
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(ppid) !== pid) continue;
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replaceAll('\0', ' ');
      found.push({ pid: Number(entry), state, cmdline });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** A stand-in for traefik/whoami in namespace `ns`: port 80, `Name: NAME` first, /health answers 200. */
async function startDemoBackend(lab: Lab, ns: string, name: string): Promise<void> {
  const script = `require('node:http').createServer((req, res) => {
    res.end(req.url === '/health' ? 'ok' : 'Name: ' + process.argv[1] + '\\nGET ' + req.url + '\\n');
  }).listen(80, () => console.log('listening'));`;
  const child = lab.spawn(ns, [join(NODE_DIR, 'node'), '-e', script, name]);
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => c.toString().includes('listening') && resolve());
    child.once('exit', (code) => reject(new Error(`the ${name} backend exited with ${code}`)));
  });
}
