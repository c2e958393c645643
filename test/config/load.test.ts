import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { loadConfigFile, loadConfigText } from '../../src/config/load.ts';
import type { LoadOptions } from '../../src/config/load.ts';
import type { Config } from '../../src/config/types.ts';

const MINIMAL = `
listeners:
  - { name: web, address: 127.0.0.1:8080 }
routes:
  - { name: all, pool: web }
pools:
  web:
    backends:
      - { name: a, url: "http://127.0.0.1:9001" }
`;

/** Loads YAML text that must be valid, from a fake file under /srv/tandem. */
function load(text: string, options: LoadOptions = {}, file = '/srv/tandem/tandem.yaml'): Config {
  const result = loadConfigText(text, file, { env: {}, ...options });
  if (!result.ok) assert.fail(`expected the config to load, got:\n${result.errors.join('\n')}`);
  return result.config;
}

function errors(text: string, options: LoadOptions = {}): string[] {
  const result = loadConfigText(text, 'x.yaml', { env: {}, ...options });
  assert.equal(result.ok, false, 'expected errors');
  return result.ok ? [] : result.errors;
}

const HA = `
ha:
  nodes: { lb1: { address: 127.0.0.1:7946 }, lb2: { address: 127.0.0.1:7947 } }
  secret: "0123456789abcdef"
  vips:
    - { name: vip, address: 10.0.0.100/24, interface: eth0 }
`;

test('a minimal file gets every default filled in', () => {
  const config = load(MINIMAL);
  assert.deepEqual(config, {
    file: '/srv/tandem/tandem.yaml',
    workers: availableParallelism(),
    shutdownTimeout: 30_000,
    log: { level: 'info', format: 'auto' },
    trustedProxies: [],
    accessLog: null,
    listeners: [
      {
        name: 'web',
        host: '127.0.0.1',
        port: 8080,
        tls: null,
        engine: process.env.TANDEM_ENGINE === 'node' ? 'node' : 'fast',
        headersTimeout: 10_000,
        requestTimeout: 60_000,
        keepAliveTimeout: 5_000,
        maxHeaderSize: 16_384,
        http2: false,
        proxyProtocol: null,
        sendTimeout: 30_000,
        maxConnections: 0,
      },
    ],
    routes: [
      {
        name: 'all',
        listeners: [],
        match: { hosts: [], hostSuffixes: [], pathPrefix: '/', methods: [], headers: [] },
        pool: 'web',
        redirect: null, rewrite: null, headers: null, allow: null, compress: null,
        rateLimit: null,
      },
    ],
    pools: new Map([
      [
        'web',
        {
          name: 'web',
          balance: 'weighted-round-robin',
          backends: [
            {
              name: 'a',
              origin: 'http://127.0.0.1:9001',
              protocol: 'http:',
              host: '127.0.0.1',
              port: 9001,
              weight: 1,
              backup: false,
              maxConnections: 128,
            },
          ],
          hostHeader: 'preserve',
          healthCheck: null,
          outlier: null,
          connectTimeout: 2_000,
          responseTimeout: 30_000,
          idleTimeout: 60_000,
          queueSize: 1024,
          queueTimeout: 5_000,
          retries: 1,
          retryBudgetPercent: 20,
          slowStart: 0,
          panic: false,
          sticky: null,
          debugHeaders: false,
          tls: null,
          proxyProtocol: null,
        },
      ],
    ]),
    admin: { host: '127.0.0.1', port: 9901, token: null, authReads: false },
    ha: null,
  } satisfies Config);
});

test('sections given empty get their own defaults', () => {
  const config = load(`${MINIMAL}
    healthCheck: {}
    outlier: {}
    sticky: {}
${HA}`);
  const pool = config.pools.get('web');
  assert.deepEqual(pool?.healthCheck, {
    path: '/',
    method: 'GET',
    port: null,
    host: null,
    interval: 2_000,
    timeout: 1_000,
    rise: 2,
    fall: 3,
    expectStatus: [[200, 399]],
    expectBody: null,
    startUnhealthy: false,
  });
  assert.deepEqual(pool?.outlier, { consecutiveFailures: 5, on5xx: false, ejectFor: 30_000, maxEjectFor: 300_000, maxEjectedPercent: 50 });
  assert.deepEqual(pool?.sticky, { cookie: 'TANDEM_STICKY', ttl: 3_600_000 });
  assert.deepEqual(config.ha, {
    store: 'peer',
    etcd: null,
    nodes: [
      { id: 'lb1', host: '127.0.0.1', port: 7946 },
      { id: 'lb2', host: '127.0.0.1', port: 7947 },
    ],
    secret: '0123456789abcdef',
    multicastGroup: '224.0.0.18',
    leaseDuration: 1_000,
    renewEvery: 200,
    hook: null,
    agent: false,
    hookTimeout: 5_000,
    garpCount: 3,
    garpInterval: 200,
    garpRefresh: 60_000,
    // Without a priority map every node may hold the VIP; the VIPs without one are spread.
    vips: [{ name: 'vip', address: '10.0.0.100/24', interface: 'eth0', priority: { lb1: 150, lb2: 120 }, preempt: true, preemptDelay: 0, pools: [] }],
  });
});

test('VIPs without priorities spread over the nodes, and so do the VIPs of a node that dies', () => {
  const nodes = ['lb1', 'lb2', 'lb3'];
  const vips = Array.from({ length: 6 }, (_, i) => `    - { name: v${i}, address: 10.0.0.${100 + i}/24, interface: eth0 }`);
  const config = load(`${MINIMAL}
ha:
  nodes: { lb1: { address: 127.0.0.1:7946 }, lb2: { address: 127.0.0.1:7947 }, lb3: { address: 127.0.0.1:7948 } }
  secret: "0123456789abcdef"
  vips:
${vips.join('\n')}
    - { name: given, address: 10.0.0.99/24, interface: eth0, priority: { lb3: 10 } }
`);
  const all = config.ha!.vips;
  const order = (p: Record<string, number>) => Object.entries(p).sort((a, b) => b[1] - a[1]).map(([id]) => id);
  const spread = all.filter((v) => v.name !== 'given');
  // Every node up: each holds 6 / 3 = 2.
  for (const n of nodes) assert.equal(spread.filter((v) => order(v.priority)[0] === n).length, 2, `${n} first for two VIPs`);
  // Each node down in turn: its two VIPs go to the two others, one each.
  for (const dead of nodes) {
    const heirs = spread.filter((v) => order(v.priority)[0] === dead).map((v) => order(v.priority).find((id) => id !== dead));
    assert.deepEqual([...heirs].sort(), nodes.filter((n) => n !== dead), `${dead}'s VIPs go to ${heirs.join(', ')}`);
  }
  // Every node may hold every spread VIP; a map that is given is kept as it is.
  for (const v of spread) assert.deepEqual(Object.keys(v.priority).sort(), nodes);
  assert.deepEqual(all.find((v) => v.name === 'given')!.priority, { lb3: 10 });
});

test('every key given explicitly reaches the compiled form', () => {
  const config = load(`
workers: 3
shutdownTimeout: 1m30s
trustedProxies: [10.0.0.0/8, 192.168.1.7, "fd00::/8"]
accessLog: { path: stdout }
listeners:
  - name: web
    address: "[::]:8443"
    timeouts: { headers: 5s, request: 0s, keepAlive: 1500ms, send: 10s }
    maxHeaderSize: 8192
    maxConnections: 5000
    engine: node
routes:
  - name: api
    listeners: [web]
    match: { host: [API.example.com, "*.Example.org"], pathPrefix: /api, methods: [get, POST], headers: { X-Canary: 1 } }
    pool: api
    compress: { types: [text/html], minSize: 100 }
    rateLimit: { requests: 50, per: 10s, burst: 80, clients: 1000 }
pools:
  api:
    balance: least-connections
    backends:
      - { name: a1, url: "https://[::1]", weight: 5, backup: false, maxConnections: 10 }
      - { name: a2, url: "http://api.internal:8080/", weight: 0 }
      - { name: spare, url: "http://10.0.0.9", backup: true }
    hostHeader: backend
    healthCheck:
      path: /healthz
      method: HEAD
      port: 9002
      host: status.internal
      interval: 500ms
      timeout: 250ms
      rise: 1
      fall: 5
      expect: { status: ["200-299", 404], body: ok }
      startUnhealthy: true
    outlier: { consecutiveFailures: 2, on5xx: true, ejectFor: 1s, maxEjectFor: 10s, maxEjectedPercent: 100 }
    timeouts: { connect: 100ms, response: 1s, idle: 2s }
    queue: { size: 10, timeout: 250ms }
    retries: 0
    retryBudget: 5
    slowStart: 30s
    panic: true
    sticky: { cookie: S, ttl: 10m }
    debugHeaders: true
    proxyProtocol: v1
admin: { address: "[::1]:9000", token: secret-token, authReads: true }
ha:
  store: etcd
  etcd: { endpoints: ["http://127.0.0.1:2379", "https://etcd.internal:2379"], prefix: /lb, auth: { user: lb, password: etcd-pass } }
  nodes: { lb1: { address: 10.0.0.11:7946 } }
  multicast: 224.0.0.77
  lease: { duration: 3s, renewEvery: 1s }
  hook: /usr/local/bin/vip-hook
  hookTimeout: 2s
  garp: { count: 0, interval: 1s, refresh: 0s }
  vips:
    - name: v6
      address: FD00::100/64
      interface: eth0.10
      priority: { lb1: 255 }
      preempt: false
      pools: [api]
`);
  assert.equal(config.workers, 3);
  assert.equal(config.shutdownTimeout, 90_000);
  assert.deepEqual(config.trustedProxies, ['10.0.0.0/8', '192.168.1.7/32', 'fd00::/8']);
  assert.deepEqual(config.accessLog, { path: 'stdout' });
  assert.deepEqual(config.listeners[0], {
    name: 'web',
    host: '::',
    port: 8443,
    tls: null,
    headersTimeout: 5_000,
    requestTimeout: 0,
    keepAliveTimeout: 1_500,
    maxHeaderSize: 8192,
    http2: false,
    proxyProtocol: null,
    engine: 'node',
    sendTimeout: 10_000,
    maxConnections: 5000,
  });
  assert.deepEqual(config.routes[0], {
    name: 'api',
    listeners: ['web'],
    match: {
      hosts: ['api.example.com'],
      hostSuffixes: ['.example.org'],
      pathPrefix: '/api',
      methods: ['GET', 'POST'],
      headers: [['x-canary', '1']],
    },
    pool: 'api',
    redirect: null, rewrite: null, headers: null, allow: null, compress: { types: ['text/html'], minSize: 100 },
    rateLimit: { requests: 50, per: 10_000, burst: 80, clients: 1000 },
  });
  const pool = config.pools.get('api');
  assert.deepEqual(pool?.backends, [
    { name: 'a1', origin: 'https://[::1]', protocol: 'https:', host: '::1', port: 443, weight: 5, backup: false, maxConnections: 10 },
    { name: 'a2', origin: 'http://api.internal:8080', protocol: 'http:', host: 'api.internal', port: 8080, weight: 0, backup: false, maxConnections: 128 },
    { name: 'spare', origin: 'http://10.0.0.9', protocol: 'http:', host: '10.0.0.9', port: 80, weight: 1, backup: true, maxConnections: 128 },
  ]);
  assert.deepEqual(pool?.healthCheck, {
    path: '/healthz',
    method: 'HEAD',
    port: 9002,
    host: 'status.internal',
    interval: 500,
    timeout: 250,
    rise: 1,
    fall: 5,
    expectStatus: [
      [200, 299],
      [404, 404],
    ],
    expectBody: 'ok',
    startUnhealthy: true,
  });
  assert.deepEqual(pool?.outlier, { consecutiveFailures: 2, on5xx: true, ejectFor: 1_000, maxEjectFor: 10_000, maxEjectedPercent: 100 });
  assert.equal(pool?.balance, 'least-connections');
  assert.equal(pool?.hostHeader, 'backend');
  assert.deepEqual(
    [pool?.connectTimeout, pool?.responseTimeout, pool?.idleTimeout, pool?.retries, pool?.retryBudgetPercent, pool?.slowStart, pool?.panic, pool?.debugHeaders, pool?.proxyProtocol],
    [100, 1_000, 2_000, 0, 5, 30_000, true, true, 'v1'],
  );
  assert.deepEqual(pool?.sticky, { cookie: 'S', ttl: 600_000 });
  assert.deepEqual([pool?.queueSize, pool?.queueTimeout], [10, 250]);
  assert.deepEqual(config.admin, { host: '::1', port: 9000, token: 'secret-token', authReads: true });
  assert.deepEqual(config.ha, {
    store: 'etcd',
    etcd: { endpoints: ['http://127.0.0.1:2379', 'https://etcd.internal:2379'], prefix: '/lb', tls: null, auth: { user: 'lb', password: 'etcd-pass' } },
    nodes: [{ id: 'lb1', host: '10.0.0.11', port: 7946 }],
    secret: null,
    multicastGroup: '224.0.0.77',
    leaseDuration: 3_000,
    renewEvery: 1_000,
    hook: '/usr/local/bin/vip-hook',
    agent: false,
    hookTimeout: 2_000,
    garpCount: 0,
    garpInterval: 1_000,
    garpRefresh: 0,
    vips: [{ name: 'v6', address: 'fd00::100/64', interface: 'eth0.10', priority: { lb1: 255 }, preempt: false, preemptDelay: 0, pools: ['api'] }],
  });
});

test('workers: auto means one worker per available CPU', () => {
  assert.equal(load(`workers: auto\n${MINIMAL}`).workers, availableParallelism());
});

test('preempt takes a delay, true, or false', () => {
  const vips = (preempt: string) => load(`${MINIMAL}${HA.replace('interface: eth0 }', `interface: eth0, preempt: ${preempt} }`)}`).ha?.vips[0];
  assert.deepEqual([vips('{ delay: 5s }')?.preempt, vips('{ delay: 5s }')?.preemptDelay], [true, 5_000]);
  assert.deepEqual([vips('true')?.preempt, vips('true')?.preemptDelay], [true, 0]);
  assert.deepEqual([vips('false')?.preempt, vips('false')?.preemptDelay], [false, 0]);
});

test('the admin API is on at 127.0.0.1:9901 unless the file says admin: false', () => {
  assert.equal(load(`${MINIMAL}admin: false\n`).admin, null);
  assert.deepEqual(load(`${MINIMAL}admin: true\n`).admin, { host: '127.0.0.1', port: 9901, token: null, authReads: false });
  assert.deepEqual(load(`${MINIMAL}admin: { address: 127.0.0.1:0 }\n`).admin, { host: '127.0.0.1', port: 0, token: null, authReads: false });
});

test('an empty admin token counts as no token, so an open admin address is refused', () => {
  assert.equal(load(`${MINIMAL}admin: { token: "" }\n`).admin?.token, null);
  const found = errors(`${MINIMAL}admin: { address: 0.0.0.0:9901, token: "\${T:-}" }\n`);
  assert.deepEqual(
    found.map((e) => e.split(': ').slice(0, 2).join(': ')),
    ['x.yaml:10:19: admin.address'],
  );
  assert.equal(load(`${MINIMAL}admin: { address: 0.0.0.0:9901, token: "\${T}" }\n`, { env: { T: 'abc' } }).admin?.token, 'abc');
});

test('the peer store with two nodes needs a secret, of at least 16 characters', () => {
  const noSecret = HA.replace('  secret: "0123456789abcdef"\n', '');
  assert.deepEqual(errors(`${MINIMAL}${noSecret}`).map((e) => e.split(': ').slice(0, 2).join(': ')), ['x.yaml:12:3: ha.secret']);
  const short = HA.replace('"0123456789abcdef"', 'short');
  assert.match(errors(`${MINIMAL}${short}`)[0], /^x\.yaml:13:11: ha\.secret: is too short: 5 characters \(must be at least 16\)$/);
  const oneNode = noSecret.replace(', lb2: { address: 127.0.0.1:7947 }', '');
  assert.equal(load(`${MINIMAL}${oneNode}`).ha?.secret, null);
});

test('${VAR} and ${VAR:-default} are expanded from the environment given', () => {
  const config = load(
    `
workers: \${WORKERS}
listeners:
  - name: web
    address: \${LISTEN:-127.0.0.1:8080}
routes:
  - { name: all, pool: web }
pools:
  web:
    backends:
      - { name: a, url: "http://\${BACKEND_HOST}:\${BACKEND_PORT:-9001}", weight: "\${WEIGHT}" }
    panic: \${PANIC}
admin:
  token: "\${EMPTY:-fallback}-$\${NOT_A_VAR}-\${TOKEN:-}"
`,
    { env: { WORKERS: '4', BACKEND_HOST: '10.1.2.3', WEIGHT: '7', PANIC: 'true', EMPTY: '' } },
  );
  assert.equal(config.workers, 4);
  assert.deepEqual([config.listeners[0].host, config.listeners[0].port], ['127.0.0.1', 8080]);
  const backend = config.pools.get('web')?.backends[0];
  assert.equal(backend?.origin, 'http://10.1.2.3:9001');
  assert.equal(backend?.weight, 7);
  assert.equal(config.pools.get('web')?.panic, true);
  assert.equal(config.admin?.token, 'fallback-${NOT_A_VAR}-');
});

test('an environment value is checked like a written one, at the position of the scalar', () => {
  const found = errors(`workers: \${W}\n${MINIMAL}`, { env: { W: 'lots' } });
  assert.deepEqual(found, ['x.yaml:1:10: workers: must be an integer from 1 to 1024, or auto (got "lots")']);
  const bad = errors(`workers: "\${W"\n${MINIMAL}`);
  assert.match(bad[0], /^x\.yaml:1:10: workers: "\$\{" has no closing "\}"/);
});

test('an environment value cannot inject YAML structure', () => {
  const config = load(`${MINIMAL}admin: { token: "\${T}" }\n`, { env: { T: 'a, authReads: true' } });
  assert.deepEqual(config.admin, { host: '127.0.0.1', port: 9901, token: 'a, authReads: true', authReads: false });
});

test('the compiled config is deep-frozen, pools map included', () => {
  const config = load(`${MINIMAL}    healthCheck: {}\n`);
  assert.ok(Object.isFrozen(config));
  assert.ok(Object.isFrozen(config.listeners) && Object.isFrozen(config.listeners[0]));
  assert.ok(Object.isFrozen(config.routes[0].match.headers));
  const pool = config.pools.get('web');
  assert.ok(pool !== undefined && Object.isFrozen(pool) && Object.isFrozen(pool.backends[0]) && Object.isFrozen(pool.healthCheck?.expectStatus[0]));
  assert.throws(() => {
    (config.listeners as unknown as unknown[]).push({});
  }, TypeError);
  assert.throws(() => {
    (config as { workers: number }).workers = 9;
  }, TypeError);
  assert.throws(() => (config.pools as Map<string, unknown>).set('x', {}), TypeError);
  assert.throws(() => (config.pools as Map<string, unknown>).delete('web'), TypeError);
  assert.equal(config.pools.size, 1);
});

test('two loads never share objects, so freezing one leaves the defaults of the next intact', () => {
  const a = load(MINIMAL);
  const b = load(MINIMAL);
  assert.notEqual(a.trustedProxies, b.trustedProxies);
  assert.notEqual(a.routes[0].match.methods, b.routes[0].match.methods);
});

let dir = '';
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tandem-config-'));
  await mkdir(join(dir, 'conf/certs'), { recursive: true });
  await writeFile(join(dir, 'conf/certs/web.crt'), 'not checked for content here\n');
  await writeFile(join(dir, 'conf/certs/web.key'), 'not checked for content here\n');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('relative paths resolve against the directory of the config file', async () => {
  const file = join(dir, 'conf/tandem.yaml');
  await writeFile(
    file,
    `accessLog: { path: logs/access.log }
listeners:
  - { name: web, address: 127.0.0.1:8443, tls: { cert: certs/web.crt, key: ./certs/web.key } }
routes:
  - { name: all, pool: web }
pools:
  web:
    backends:
      - { name: a, url: "http://127.0.0.1:9001" }
${HA}  hook: ../scripts/vip-hook.sh
`,
  );
  const result = await loadConfigFile(file, { env: {} });
  if (!result.ok) assert.fail(result.errors.join('\n'));
  const config = result.config;
  assert.equal(config.file, file);
  assert.deepEqual(config.listeners[0].tls?.certificates, [{ cert: join(dir, 'conf/certs/web.crt'), key: join(dir, 'conf/certs/web.key') }]);
  assert.equal(config.accessLog?.path, join(dir, 'conf/logs/access.log'));
  assert.equal(config.ha?.hook, join(dir, 'scripts/vip-hook.sh'));
});

test('hook: builtin names the built-in announcer, not a file beside the config', () => {
  const config = load(`${MINIMAL}${HA}  hook: builtin\n`);
  assert.equal(config.ha?.hook, 'builtin');
});

test('absolute paths and stdout are kept as written', () => {
  const config = load(`accessLog: { path: /var/log/tandem.log }\n${MINIMAL}`);
  assert.equal(config.accessLog?.path, '/var/log/tandem.log');
  assert.equal(load(`accessLog: {}\n${MINIMAL}`).accessLog?.path, 'stdout');
  assert.equal(load(`accessLog: false\n${MINIMAL}`).accessLog, null);
});

test('a TLS file that cannot be read is refused with its resolved path', { skip: process.getuid?.() === 0 ? 'root reads every file' : false }, async () => {
  const file = join(dir, 'conf/unreadable.yaml');
  await writeFile(join(dir, 'conf/certs/locked.key'), 'x');
  await chmod(join(dir, 'conf/certs/locked.key'), 0o000);
  await writeFile(
    file,
    `listeners:\n  - { name: web, address: 127.0.0.1:8443, tls: { cert: certs/web.crt, key: certs/locked.key } }\nroutes: [{ name: all, pool: web }]\npools: { web: { backends: [{ name: a, url: "http://127.0.0.1:9001" }] } }\n`,
  );
  const result = await loadConfigFile(file, { env: {} });
  assert.deepEqual(result, {
    ok: false,
    errors: [`${file}:2:76: listeners[0].tls.key: ${join(dir, 'conf/certs/locked.key')} cannot be read (must be a readable PEM key file)`],
  });
});

test('a relative file name resolves against the working directory', () => {
  const config = load(MINIMAL, {}, 'tandem.yaml');
  assert.equal(config.file, join(process.cwd(), 'tandem.yaml'));
});

test('YAML anchors and aliases can share settings', () => {
  const config = load(`
listeners:
  - { name: web, address: 127.0.0.1:8080 }
routes:
  - { name: all, pool: a }
pools:
  a:
    backends: [{ name: a, url: "http://127.0.0.1:9001" }]
    healthCheck: &check { path: /ping, interval: 3s }
  b:
    backends: [{ name: b, url: "http://127.0.0.1:9002" }]
    healthCheck: *check
`);
  assert.equal(config.pools.get('b')?.healthCheck?.path, '/ping');
  assert.equal(config.pools.get('b')?.healthCheck?.interval, 3_000);
});

test('log takes a level and a format, each checked with its position and key path', () => {
  assert.deepEqual(load(MINIMAL).log, { level: 'info', format: 'auto' });
  assert.deepEqual(load(`log: { level: debug, format: json }\n${MINIMAL}`).log, { level: 'debug', format: 'json' });
  assert.deepEqual(load(`log: { format: pretty }\n${MINIMAL}`).log, { level: 'info', format: 'pretty' });
  assert.deepEqual(errors(`log: { level: verbose, format: text }\n${MINIMAL}`), [
    'x.yaml:1:15: log.level: must be one of fatal, error, warn, info, debug, trace, silent (got "verbose")',
    'x.yaml:1:32: log.format: must be one of auto, json, pretty (got "text")',
  ]);
  assert.match(errors(`log: { levle: warn }\n${MINIMAL}`)[0], /^x\.yaml:1:8: log\.levle: .*level/);
});
