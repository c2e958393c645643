// deploy/: the compose file, the Kubernetes manifests, Prometheus and Grafana files and
// the systemd units parse, are accepted by the real tools (promtool, systemd-analyze),
// and name the ports, paths, targets and nodes that the configs and the Dockerfile use.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { loadConfigFile } from '../../src/config/load.ts';
import type { Config } from '../../src/config/types.ts';
import { imageConfig, readStages } from './image.ts';
import { missingCommand, skipUnless } from './needs.ts';
import { NODE_DIR, ROOT, sh } from './pack.ts';

const DEPLOY = join(ROOT, 'deploy');
const env = { TANDEM_HA_SECRET: 'an-example-secret-for-tests', TANDEM_ADMIN_TOKEN: 'an-example-admin-token' };
const stages = readStages(await readFile(join(ROOT, 'Dockerfile'), 'utf8'));
const proxyImage = imageConfig(stages, 'proxy');
const agentImage = imageConfig(stages, 'vip-agent');
const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string; files: string[] };
/** Where the Dockerfile's `npm install --global` and the units' `tandem` put the package. */
const INSTALLED = '/usr/local/lib/node_modules/tandem/';

async function load(file: string): Promise<Config> {
  const r = await loadConfigFile(file, { env });
  if (!r.ok) assert.fail(r.errors.join('\n'));
  return r.config;
}
const portOf = (address: string) => Number(address.slice(address.lastIndexOf(':') + 1));
/** A path in the installed package, as a path in this checkout; asserts the package ships it. */
function shipped(installedPath: string): string {
  assert.ok(installedPath.startsWith(INSTALLED), `${installedPath} is not in the installed package`);
  const rel = installedPath.slice(INSTALLED.length);
  assert.ok(pkg.files.some((f) => rel === f || rel.startsWith(f)), `package.json's files do not ship ${rel}`);
  assert.ok(existsSync(join(ROOT, rel)), `${rel} does not exist`);
  return rel;
}
/** A sidecar's `--hook`: `builtin` (the announcer script the package ships) or a path in the installed package. */
function shippedHook(arg: string): void {
  shipped(arg === 'builtin' ? `${INSTALLED}scripts/vip-announcer.pl` : arg);
}

interface Service {
  build?: { context: string; target: string };
  volumes?: string[];
  environment?: Record<string, string>;
  networks?: Record<string, { ipv4_address: string }> | string[];
  network_mode?: string;
  cap_add?: string[];
  cap_drop?: string[];
  user?: string;
  command?: string[];
}

describe('deploy/compose.yaml', async () => {
  const compose = parse(await readFile(join(DEPLOY, 'compose.yaml'), 'utf8'), { merge: true }) as {
    services: Record<string, Service>;
    networks: { tandem: { ipam: { config: { subnet: string }[] } } };
  };
  const config = await load(join(DEPLOY, 'tandem.yaml'));
  const ha = config.ha!;
  const nodeIds = ha.nodes.map((n) => n.id);
  const subnet = compose.networks.tandem.ipam.config[0].subnet;
  const inSubnet = (ip: string) => ip.startsWith(subnet.replace(/\.0\/24$/, '.'));

  test('two proxies, each with its sidecar, two backends, Prometheus and Grafana', () => {
    assert.deepEqual(Object.keys(compose.services).sort(), ['app1', 'app2', 'grafana', 'lb1', 'lb1-vip', 'lb2', 'lb2-vip', 'prometheus']);
    assert.deepEqual(nodeIds, ['lb1', 'lb2']);
  });

  test('each proxy is a node of deploy/tandem.yaml: its target, its config mount, its TANDEM_NODE and its address', () => {
    for (const node of ha.nodes) {
      const s = compose.services[node.id];
      assert.equal(s.build?.target, 'proxy');
      assert.ok(stages.some((st) => st.name === s.build?.target));
      assert.ok(s.volumes?.includes(`./tandem.yaml:${proxyImage.cmd[proxyImage.cmd.indexOf('-c') + 1]}:ro`), 'mounted where the image\'s CMD reads it');
      assert.equal(s.environment?.TANDEM_NODE, node.id);
      assert.match(s.environment?.TANDEM_HA_SECRET ?? '', /^\$\{TANDEM_HA_SECRET:\?/);
      const ip = (s.networks as Record<string, { ipv4_address: string }>).tandem.ipv4_address;
      assert.equal(node.host, ip, `${node.id}'s peer address is its container's`);
    }
    for (const vip of ha.vips) {
      assert.ok(inSubnet(vip.address.split('/')[0]), `${vip.name} is on the compose network`);
      assert.equal(vip.interface, 'eth0');
    }
    assert.equal(ha.hook, null, 'the sidecars move the VIPs, not the proxies');
  });

  test('each sidecar is the vip-agent target in its proxy\'s network namespace, root with only NET_ADMIN and NET_RAW', () => {
    for (const id of nodeIds) {
      const s = compose.services[`${id}-vip`];
      assert.equal(s.build?.target, 'vip-agent');
      assert.equal(s.network_mode, `service:${id}`);
      assert.equal(s.user, '0:0');
      assert.deepEqual(s.cap_drop, ['ALL']);
      assert.deepEqual(s.cap_add?.sort(), ['NET_ADMIN', 'NET_RAW']);
    }
    const admin = agentImage.cmd[agentImage.cmd.indexOf('--admin') + 1];
    assert.equal(portOf(new URL(admin).host), config.admin!.port, 'the sidecar follows the admin port of the config');
    shippedHook(agentImage.cmd[agentImage.cmd.indexOf('--hook') + 1]);
  });

  test('the backends are the pool\'s, on the port and health path the config checks', () => {
    const pool = config.pools.get('web')!;
    for (const b of pool.backends) {
      const url = new URL(b.origin);
      const s = compose.services[url.hostname];
      assert.ok(s !== undefined, `no service ${url.hostname}`);
      assert.ok(s.command?.join(' ').includes(`--port ${url.port || 80}`));
    }
    assert.equal(pool.healthCheck?.path, '/health', 'traefik/whoami answers /health');
  });

  test('Prometheus scrapes both admin APIs; Grafana gets Prometheus and the dashboard from files that exist', async () => {
    const prom = compose.services.prometheus;
    const [promSrc, promDest] = prom.volumes![0].split(':');
    assert.equal(promDest, '/etc/prometheus/prometheus.yml');
    const scrape = parse(await readFile(join(DEPLOY, promSrc), 'utf8')) as { scrape_configs: { metrics_path: string; static_configs: { targets: string[] }[] }[] };
    const job = scrape.scrape_configs[0];
    assert.equal(job.metrics_path, '/metrics');
    assert.deepEqual(job.static_configs[0].targets, nodeIds.map((id) => `${id}:${config.admin!.port}`));

    const mounts = Object.fromEntries(compose.services.grafana.volumes!.map((v) => v.split(':')).map(([src, dest]) => [dest, join(DEPLOY, src)]));
    const provisioning = mounts['/etc/grafana/provisioning'];
    const datasources = parse(await readFile(join(provisioning, 'datasources/prometheus.yaml'), 'utf8')) as { datasources: { uid: string; url: string }[] };
    assert.equal(datasources.datasources[0].url, 'http://prometheus:9090');
    const providers = parse(await readFile(join(provisioning, 'dashboards/tandem.yaml'), 'utf8')) as { providers: { options: { path: string } }[] };
    const dashboards = mounts[providers.providers[0].options.path];
    assert.ok(dashboards !== undefined, 'the dashboard provider reads a mounted folder');
    const dashboard = JSON.parse(await readFile(join(dashboards, 'tandem.json'), 'utf8')) as { panels: { datasource?: { uid: string } }[] };
    for (const p of dashboard.panels) if (p.datasource) assert.equal(p.datasource.uid, datasources.datasources[0].uid);
  });
});

const noPromtool = skipUnless(await missingCommand({ cmd: 'promtool', pkg: 'prometheus' }), 'promtool');

describe('Prometheus and the dashboard, checked by promtool', { skip: noPromtool }, () => {
  test('promtool accepts the scrape config', async () => {
    const r = await sh('promtool', ['check', 'config', join(DEPLOY, 'prometheus/prometheus.yml')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });

  test('every query of the dashboard is valid PromQL', async () => {
    const dashboard = JSON.parse(await readFile(join(DEPLOY, 'grafana/dashboards/tandem.json'), 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
    // Grafana's variables, as Grafana fills them in.
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr.replaceAll('$instance', '.*').replaceAll('$__rate_interval', '1m')));
    assert.ok(exprs.length >= 10);
    const dir = await mkdtemp(join(tmpdir(), 'tandem-dashboard-'));
    try {
      const file = join(dir, 'rules.yml');
      await writeFile(file, stringify({ groups: [{ name: 'dashboard', rules: exprs.map((expr, i) => ({ record: `tandem:dashboard_${i}`, expr })) }] }));
      const r = await sh('promtool', ['check', 'rules', file]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/kubernetes/', async () => {
  const dir = join(DEPLOY, 'kubernetes');
  const docs: Record<string, any>[] = [];
  for (const f of (await readdir(dir)).sort()) {
    for (const d of parseAllDocuments(await readFile(join(dir, f), 'utf8'))) {
      assert.deepEqual(d.errors, [], `${f} does not parse`);
      docs.push({ ...(d.toJS() as object), file: f });
    }
  }
  const kind = (k: string) => docs.find((d) => d.kind === k)!;
  const ds = kind('DaemonSet');
  const pod = ds.spec.template.spec;
  const container = (name: string) => pod.containers.find((c: { name: string }) => c.name === name);

  test('the kustomization names files that exist, and every manifest is in the tandem namespace', () => {
    for (const r of kind('Kustomization').resources as string[]) assert.ok(existsSync(join(dir, r)), r);
    for (const d of docs) if (d.kind !== 'Kustomization' && d.kind !== 'Namespace') assert.equal(d.metadata.namespace, 'tandem', d.file);
  });

  test('two pods on labelled nodes with host networking, the config mounted where the image reads it, the node id from the node name', async () => {
    assert.equal(pod.hostNetwork, true);
    assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
    assert.ok(Object.keys(pod.nodeSelector).length > 0);
    const tandem = container('tandem');
    assert.deepEqual(tandem.args, proxyImage.cmd);
    const mount = tandem.volumeMounts.find((m: { name: string }) => m.name === 'config');
    const configPath = proxyImage.cmd[proxyImage.cmd.indexOf('-c') + 1];
    assert.equal(`${mount.mountPath}/tandem.yaml`, configPath);
    const volume = pod.volumes.find((v: { name: string }) => v.name === 'config');
    assert.equal(volume.configMap.name, kind('ConfigMap').metadata.name);
    const nodeEnv = tandem.env.find((e: { name: string }) => e.name === 'TANDEM_NODE');
    assert.equal(nodeEnv.valueFrom.fieldRef.fieldPath, 'spec.nodeName');
  });

  test('probes on /healthz and /readyz and the scrape annotations use the config\'s admin port; ports match the listeners', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'tandem-k8s-'));
    try {
      const file = join(tmp, 'tandem.yaml');
      await writeFile(file, kind('ConfigMap').data['tandem.yaml']);
      const config = await load(file);
      const admin = config.admin!.port;
      const tandem = container('tandem');
      assert.deepEqual(tandem.livenessProbe.httpGet, { path: '/healthz', port: admin });
      assert.deepEqual(tandem.readinessProbe.httpGet, { path: '/readyz', port: admin });
      assert.equal(ds.spec.template.metadata.annotations['prometheus.io/port'], String(admin));
      const ports = tandem.ports.map((p: { containerPort: number }) => p.containerPort).sort();
      assert.deepEqual(ports, [...config.listeners.map((l) => l.port), admin, ...config.ha!.nodes.slice(0, 1).map((n) => n.port)].sort());
      assert.equal(config.admin!.host, '0.0.0.0', 'the kubelet probes the node address');
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  test('the proxy runs as the image\'s non-root user; the sidecar as root with only NET_ADMIN and NET_RAW and the shipped hook', () => {
    const sc = container('tandem').securityContext;
    assert.equal(`${sc.runAsUser}:${sc.runAsGroup}`, proxyImage.user);
    assert.equal(sc.runAsNonRoot, true);
    assert.deepEqual(sc.capabilities.drop, ['ALL']);
    const agent = container('vip-agent');
    assert.equal(agent.securityContext.runAsUser, 0);
    assert.deepEqual(agent.securityContext.capabilities, { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
    assert.deepEqual(agent.args, agentImage.cmd);
    shippedHook(agent.args[agent.args.indexOf('--hook') + 1]);
  });

  test('every secret key the pods read is in the example secret', () => {
    const secret = kind('Secret');
    for (const c of pod.containers) {
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.secretKeyRef;
        if (ref === undefined) continue;
        assert.equal(ref.name, secret.metadata.name);
        assert.ok(ref.key in secret.stringData, `${c.name} reads ${ref.key}`);
      }
    }
  });
});

const noSystemd = skipUnless(process.getuid?.() !== 0 ? 'the systemd check needs root (a private mount namespace)' : await missingCommand({ cmd: 'systemd-analyze', pkg: 'systemd' }, { cmd: 'unshare', pkg: 'util-linux' }), 'systemd-analyze');

describe('deploy/systemd/', { skip: noSystemd }, () => {
  const units = ['tandem.service', 'tandem-vip-agent.service'].map((u) => join(DEPLOY, 'systemd', u));

  test('systemd-analyze verify accepts both units with tandem installed where `npm install --global` puts it', async () => {
    // /usr/local as the package's global install lays it out, in a mount namespace of
    // the test's own: bin/tandem and bin/node (Node 24, first on systemd's PATH), and the package.
    const local = await mkdtemp(join(tmpdir(), 'tandem-usr-local-'));
    try {
      await mkdir(join(local, 'bin'));
      await mkdir(join(local, 'lib/node_modules'), { recursive: true });
      await symlink(join(ROOT, 'bin/tandem.js'), join(local, 'bin/tandem'));
      await symlink(join(NODE_DIR, 'node'), join(local, 'bin/node'));
      await symlink(ROOT, join(local, 'lib/node_modules/tandem'));
      const script = `mount --bind "$1" /usr/local && shift && exec "$@"`;
      const r = await sh('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', local, 'systemd-analyze', 'verify', ...units]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(r.stderr, '', 'no warning');

      // ExecStartPre, as the unit has it, accepts the config installed beside it.
      const unit = await readFile(units[0], 'utf8');
      const pre = /^ExecStartPre=(.*)$/m.exec(unit)![1].split(' ');
      const etc = await mkdtemp(join(tmpdir(), 'tandem-etc-'));
      try {
        await writeFile(join(etc, 'tandem.yaml'), await readFile(join(DEPLOY, 'systemd/tandem.yaml')));
        const checkScript = `mount --bind "$1" /usr/local && mkdir -p /etc/tandem && mount --bind "$2" /etc/tandem && shift 2 && exec "$@"`;
        const check = await sh('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', checkScript, 'sh', local, etc, ...pre], {
          env: { ...env, TANDEM_NODE: 'lb1', PATH: `/usr/local/bin:${process.env.PATH}` },
        });
        assert.equal(check.code, 0, check.stdout + check.stderr);
      } finally {
        await rm(etc, { recursive: true, force: true });
      }
    } finally {
      await rm(local, { recursive: true, force: true });
    }
  });

  test('the proxy runs unprivileged and reloads on SIGHUP; the agent has NET_ADMIN and NET_RAW as ambient capabilities and the shipped hook', async () => {
    const [proxy, agent] = await Promise.all(units.map((u) => readFile(u, 'utf8')));
    assert.match(proxy, /^DynamicUser=yes$/m);
    assert.match(proxy, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    assert.match(proxy, /^CapabilityBoundingSet=CAP_NET_BIND_SERVICE$/m);
    assert.match(proxy, /^ExecStart=\/usr\/local\/bin\/tandem run -c \/etc\/tandem\/tandem.yaml$/m);
    assert.match(agent, /^AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW$/m);
    assert.match(agent, /^CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW$/m);
    assert.match(agent, /^BindsTo=tandem.service$/m);
    const hook = /--hook (\S+)/.exec(agent)![1];
    shippedHook(hook);
    const config = await load(join(DEPLOY, 'systemd/tandem.yaml'));
    assert.ok(agent.includes(`--admin http://${config.admin!.host}:${config.admin!.port}`), 'the agent follows the config\'s admin address');
    assert.equal(config.ha!.hook, null);
  });
});
