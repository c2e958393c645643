import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { loadConfigFile, loadConfigText } from '../../src/config/load.ts';

const fixtures = join(import.meta.dirname, '../fixtures/config');

/** Loads a broken fixture with an empty environment and returns its error lines. */
async function errorsOf(name: string, node: string | null = null): Promise<string[]> {
  const result = await loadConfigFile(join(fixtures, name), { env: {}, node });
  assert.equal(result.ok, false, `${name} should not load`);
  return result.ok ? [] : result.errors;
}

/** Asserts the `FILE:LINE:COL: key.path` prefix of every error, in order, and nothing more. */
function assertPrefixes(name: string, errors: string[], expected: string[]): void {
  const file = join(fixtures, name);
  const prefixes = errors.map((e) => {
    assert.ok(e.startsWith(`${file}:`), `error does not start with the file name: ${e}`);
    const rest = e.slice(file.length + 1);
    const m = /^(\d+:\d+: [^ ]+?):/.exec(rest);
    assert.ok(m !== null, `error has no LINE:COL: key.path: prefix: ${e}`);
    return m[1];
  });
  assert.deepEqual(prefixes, expected, errors.join('\n'));
}

/** Asserts that the error at `key.path` says `text`. */
function assertSays(errors: string[], path: string, text: string | RegExp): void {
  const line = errors.find((e) => e.includes(` ${path}: `));
  assert.ok(line !== undefined, `no error for ${path} in:\n${errors.join('\n')}`);
  if (typeof text === 'string') assert.ok(line.includes(text), `error for ${path} does not say "${text}": ${line}`);
  else assert.match(line, text);
}

test('a YAML syntax error is reported with its line, column and (syntax) as key path', async () => {
  const errors = await errorsOf('syntax-error.yaml');
  assertPrefixes('syntax-error.yaml', errors, ['7:5: (syntax)', '9:1: (syntax)']);
  assertSays(errors, '(syntax)', /end with a \]/);
  assert.ok(errors[1].includes('indent with spaces'), errors[1]);
});

test('a key written twice in one mapping is a syntax error at the second one', async () => {
  const errors = await errorsOf('duplicate-key.yaml');
  assertPrefixes('duplicate-key.yaml', errors, ['10:5: (syntax)']);
  assert.match(errors[0], /unique/);
});

test('an unknown key is reported at the key, with a suggestion when one is close', async () => {
  const errors = await errorsOf('unknown-key.yaml');
  assertPrefixes('unknown-key.yaml', errors, [
    '2:43: listeners[0].maxHeadersSize',
    '8:50: pools.web.backends[0].wieght',
    '9:5: pools.web.healthcheck',
    '10:5: pools.web.colour',
  ]);
  assertSays(errors, 'pools.web.backends[0].wieght', 'unknown key (did you mean weight?)');
  assertSays(errors, 'listeners[0].maxHeadersSize', 'did you mean maxHeaderSize?');
  assertSays(errors, 'pools.web.healthcheck', 'did you mean healthCheck?');
  assertSays(errors, 'pools.web.colour', 'valid keys: balance, backends,');
});

test('a value of the wrong type says what was expected and what was found', async () => {
  const errors = await errorsOf('wrong-types.yaml');
  assertPrefixes('wrong-types.yaml', errors, [
    '1:10: workers',
    '2:17: trustedProxies',
    '5:14: listeners[0].address',
    '6:20: listeners[0].maxHeaderSize',
    '9:23: routes[0].match.methods',
    '13:14: pools.web.balance',
    '15:58: pools.web.backends[0].backup',
    '15:71: pools.web.backends[0].weight',
    '16:12: pools.web.panic',
    '17:8: admin',
  ]);
  assertSays(errors, 'workers', 'must be an integer from 1 to 1024, or auto (got "many")');
  assertSays(errors, 'pools.web.backends[0].backup', 'must be true or false (got "yes")');
  assertSays(errors, 'pools.web.balance', 'must be one of weighted-round-robin, least-connections (got "round-robin")');
  assertSays(errors, 'admin', '(got a list)');
});

test('a duration without a unit or with a wrong one is refused, and a bare number says to write the unit', async () => {
  const errors = await errorsOf('bad-duration.yaml');
  assertPrefixes('bad-duration.yaml', errors, [
    '1:18: shutdownTimeout',
    '5:26: listeners[0].timeouts.headers',
    '5:43: listeners[0].timeouts.keepAlive',
    '12:30: pools.web.healthCheck.interval',
    '12:42: pools.web.healthCheck.timeout',
    '13:26: pools.web.timeouts.connect',
  ]);
  assertSays(errors, 'shutdownTimeout', 'write 30s');
  assertSays(errors, 'pools.web.healthCheck.interval', 'write 2s');
  assertSays(errors, 'listeners[0].timeouts.keepAlive', '"5sec" is not a duration');
  assertSays(errors, 'pools.web.timeouts.connect', 'must be at least 1ms (got 0s)');
});

test('references to listeners, pools and nodes that do not exist are reported where they are written', async () => {
  const errors = await errorsOf('missing-reference.yaml');
  assertPrefixes('missing-reference.yaml', errors, [
    '4:30: routes[0].listeners[0]',
    '4:71: routes[0].pool',
    '16:85: ha.vips[0].priority.lb2',
    '16:105: ha.vips[0].pools[0]',
  ]);
  assertSays(errors, 'routes[0].pool', 'no pool named "apo" (did you mean api? pools: api, web)');
  assertSays(errors, 'ha.vips[0].priority.lb2', 'no node named "lb2"');
});

test('a missing required key is reported at the mapping that should hold it', async () => {
  const errors = await errorsOf('missing-required.yaml');
  assertPrefixes('missing-required.yaml', errors, [
    '1:1: listeners',
    '2:5: routes[0].pool',
    '6:5: pools.web.backends',
    '8:17: ha.nodes.lb1.address',
    '10:7: ha.vips[0].address',
  ]);
  assertSays(errors, 'listeners', 'is missing');
});

test('duplicate names of listeners, routes, backends in a pool and VIPs are refused', async () => {
  const errors = await errorsOf('duplicate-names.yaml');
  assertPrefixes('duplicate-names.yaml', errors, [
    '3:13: listeners[1].name',
    '6:13: routes[1].name',
    '11:17: pools.web.backends[1].name',
    '17:15: ha.vips[1].name',
  ]);
  assertSays(errors, 'listeners[1].name', 'duplicate name "web" (already used by listeners[0]');
});

test('backend URLs must be plain http or https origins', async () => {
  const errors = await errorsOf('bad-url.yaml');
  assertPrefixes('bad-url.yaml', errors, [
    '8:25: pools.web.backends[0].url',
    '9:25: pools.web.backends[1].url',
    '10:25: pools.web.backends[2].url',
    '11:25: pools.web.backends[3].url',
    '12:25: pools.web.backends[4].url',
  ]);
  assertSays(errors, 'pools.web.backends[0].url', 'must not have a path');
  assertSays(errors, 'pools.web.backends[1].url', 'scheme ftp is not supported');
  assertSays(errors, 'pools.web.backends[2].url', 'credentials');
});

test('addresses that do not parse are refused, and an open admin address needs a token', async () => {
  const errors = await errorsOf('bad-address.yaml');
  assertPrefixes('bad-address.yaml', errors, [
    '1:29: trustedProxies[1]',
    '1:42: trustedProxies[2]',
    '3:25: listeners[0].address',
    '4:25: listeners[1].address',
    '5:25: listeners[2].address',
    '6:25: listeners[3].address',
    '13:19: admin.address',
    '16:21: ha.nodes.lb1.address',
    '18:29: ha.vips[0].address',
  ]);
  assertSays(errors, 'listeners[0].address', 'has no port');
  assertSays(errors, 'listeners[2].address', 'write [::1]:8080');
  assertSays(errors, 'admin.address', 'needs a token');
  assertSays(errors, 'ha.vips[0].address', 'has no prefix length');
});

test('an unset environment variable without default is an error at the scalar that uses it', async () => {
  const errors = await errorsOf('unset-env.yaml');
  assertPrefixes('unset-env.yaml', errors, ['8:25: pools.web.backends[0].url', '10:10: admin.token']);
  assertSays(errors, 'admin.token', 'environment variable TANDEM_TEST_UNSET_TOKEN is not set');
});

test('a pool whose backends all have weight 0 or are backups is refused', async () => {
  const errors = await errorsOf('weight-zero.yaml');
  assertPrefixes('weight-zero.yaml', errors, ['8:7: pools.web.backends']);
  assertSays(errors, 'pools.web.backends', 'weight above 0 and backup: false');
});

test('a health check timeout not shorter than its interval is refused', async () => {
  const errors = await errorsOf('timeout-interval.yaml');
  assertPrefixes('timeout-interval.yaml', errors, ['11:16: pools.web.healthCheck.timeout']);
});

test('a lease renewed less often than three times per lease is refused', async () => {
  const errors = await errorsOf('renew-too-large.yaml');
  assertPrefixes('renew-too-large.yaml', errors, ['13:17: ha.lease.renewEvery']);
  assertSays(errors, 'ha.lease.renewEvery', 'at most 333ms for 1s; got 500ms');
});

test('a --node that is not one of ha.nodes is refused and the error lists the ids that exist', async () => {
  const errors = await errorsOf('ha-pair.yaml', 'lb3');
  assertPrefixes('ha-pair.yaml', errors, ['12:5: ha.nodes']);
  assertSays(errors, 'ha.nodes', '--node lb3 is not a node of this config (nodes: lb1, lb2)');
  const ok = await loadConfigFile(join(fixtures, 'ha-pair.yaml'), { env: {}, node: 'lb2' });
  assert.equal(ok.ok, true);
  const noNode = await loadConfigFile(join(fixtures, 'ha-pair.yaml'), { env: {}, node: null });
  assert.equal(noNode.ok, true, 'check without --node is fine');
});

test('all mistakes of a file come at once: schema, references, environment and cross-field rules together', async () => {
  const errors = await errorsOf('many-mistakes.yaml');
  assertPrefixes('many-mistakes.yaml', errors, [
    '2:18: shutdownTimeout',
    '4:56: listeners[0].tls.cert',
    '4:74: listeners[0].tls.key',
    '6:24: routes[0].pool',
    '10:50: pools.web.backends[0].wieght',
    '11:43: pools.web.healthCheck.timeout',
    '13:10: admin.token',
    '15:3: ha.secret',
    '18:41: ha.lease.renewEvery',
    '20:78: ha.vips[0].priority.lb1',
  ]);
  assertSays(errors, 'listeners[0].tls.cert', 'missing.crt does not exist');
  assertSays(errors, 'ha.secret', 'is missing');
});

test('every error is a single line', async () => {
  for (const name of ['syntax-error.yaml', 'wrong-types.yaml', 'many-mistakes.yaml', 'bad-address.yaml']) {
    for (const e of await errorsOf(name)) assert.ok(!e.includes('\n'), e);
  }
});

test('a file that cannot be read gives FILE: cannot read: reason', async () => {
  const file = join(fixtures, 'does-not-exist.yaml');
  assert.deepEqual(await loadConfigFile(file), { ok: false, errors: [`${file}: cannot read: no such file`] });
  assert.deepEqual(await loadConfigFile(fixtures), { ok: false, errors: [`${fixtures}: cannot read: is a directory`] });
});

test('an empty file and a file that is not a mapping are reported at 1:1', () => {
  assert.deepEqual(loadConfigText('', 'x.yaml'), {
    ok: false,
    errors: ['x.yaml:1:1: (root): the file is empty (must be a mapping with listeners, routes and pools)'],
  });
  assert.deepEqual(loadConfigText('- a\n', 'x.yaml'), {
    ok: false,
    errors: ['x.yaml:1:1: (root): must be a mapping with listeners, routes and pools (got a list)'],
  });
});

test('a plain ${VAR} inside a flow mapping gets a hint to quote it', () => {
  const result = loadConfigText('admin: { token: ${X} }\n', 'x.yaml', { env: { X: 'y' } });
  assert.equal(result.ok, false);
  assert.ok(!result.ok && result.errors[0].startsWith('x.yaml:1:18: (syntax): '), String(!result.ok && result.errors));
  assert.ok(!result.ok && result.errors[0].includes('quote values with ${...}'));
});

test('the file name in messages is the one the caller gave', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-config-'));
  try {
    await writeFile(join(dir, 'x.yaml'), 'workers: 0\n');
    const given = relative(process.cwd(), join(dir, 'x.yaml'));
    const result = await loadConfigFile(given);
    assert.equal(result.ok, false);
    assert.ok(!result.ok && result.errors.includes(`${given}:1:10: workers: must be an integer from 1 to 1024, or auto (got 0)`), String(!result.ok && result.errors));
  } finally {
    await rm(dir, { recursive: true });
  }
});

test('a suggestion is made only when one candidate is clearly the closest', () => {
  const pools = `
listeners: [{ name: web, address: 127.0.0.1:8080 }]
routes: [{ name: all, pool: web3 }]
pools:
  web1: { backends: [{ name: a, url: "http://127.0.0.1:9001" }] }
  web2: { backends: [{ name: a, url: "http://127.0.0.1:9002" }] }
`;
  const result = loadConfigText(pools, 'x.yaml', { env: {} });
  assert.deepEqual(result, { ok: false, errors: ['x.yaml:3:29: routes[0].pool: no pool named "web3" (pools: web1, web2)'] });
});

test('an interface name outside what Linux allows is refused at its position, so nothing like $(...) reaches the hook', () => {
  const config = (iface: string) => `listeners:
  - { name: web, address: 127.0.0.1:8080 }
routes:
  - { name: all, pool: web }
pools:
  web:
    backends:
      - { name: a, url: "http://127.0.0.1:9001" }
ha:
  nodes: { lb1: { address: 127.0.0.1:7946 } }
  vips:
    - name: vip
      address: 10.0.0.100/24
      interface: ${JSON.stringify(iface)}
`;
  for (const bad of ['eth0$(reboot)', 'eth0;id', 'eth`id`', "eth'0", 'eth 0', 'a/b', '-eth0', '.', '..', 'a-name-of-16-chr', '']) {
    const result = loadConfigText(config(bad), 'x.yaml', { env: {} });
    assert.equal(result.ok, false, `${JSON.stringify(bad)} was accepted`);
    const line = result.ok ? '' : result.errors[0];
    assert.ok(line.startsWith('x.yaml:14:18: ha.vips[0].interface: '), line);
    if (bad !== '') assert.ok(line.includes('is not a network interface name (must be 1 to 15 of letters, digits'), line);
  }
  for (const good of ['eth0', 'bond0.10', 'veth_a-b', 'eth0:1', 'vlan@x', 'a-name-of-15-ch']) {
    const result = loadConfigText(config(good), 'x.yaml', { env: {} });
    assert.ok(result.ok, result.ok ? '' : result.errors.join('\n'));
  }
});

test('overload settings are checked like every other key', async () => {
  const errors = await errorsOf('overload-mistakes.yaml');
  assertPrefixes('overload-mistakes.yaml', errors, [
    '4:23: listeners[0].timeouts.send',
    '5:21: listeners[0].maxConnections',
    '9:16: routes[0].rateLimit.requests',
    '9:34: routes[0].rateLimit.burst',
    '14:20: pools.web.queue.size',
    '14:35: pools.web.queue.timeout',
  ]);
  assertSays(errors, 'listeners[0].timeouts.send', 'needs a unit (write 30s or 30ms)');
  assertSays(errors, 'listeners[0].maxConnections', 'must be an integer from 0 (no limit) to 1000000 (got -1)');
  assertSays(errors, 'routes[0].rateLimit.requests', 'missing');
  assertSays(errors, 'pools.web.queue.size', 'from 0 (no queue)');
  assertSays(errors, 'pools.web.queue.timeout', 'at least');
});
