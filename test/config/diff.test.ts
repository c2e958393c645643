// What a reload changed, as its log line and event say it (src/config/diff.ts).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeChanges, diffConfig } from '../../src/config/diff.ts';
import { loadConfigText } from '../../src/config/load.ts';
import type { Config } from '../../src/config/types.ts';
import { config, singlePool } from '../helpers/config.ts';

const compiled = (yaml: string): Config => {
  const result = loadConfigText(yaml, '/srv/tandem/tandem.yaml', { env: {} });
  if (!result.ok) assert.fail(result.errors.join('\n'));
  return result.config;
};

const BASE = singlePool([{ name: 'a', url: 'http://127.0.0.1:9001' }, { name: 'b', url: 'http://127.0.0.1:9002' }]);

test('the same file changes nothing', () => {
  const c = diffConfig(compiled(BASE), compiled(BASE));
  assert.equal(describeChanges(c), 'nothing changed');
  assert.deepEqual(c.settings, []);
});

test('settings, and listeners, routes, pools and backends by name: added, removed, changed', () => {
  const prev = compiled(BASE);
  const next = compiled(config({
    workers: 3,
    log: { level: 'debug' },
    listeners: [{ name: 'web', address: '127.0.0.1:8081' }, { name: 'web2', address: '127.0.0.1:0' }],
    routes: [{ name: 'api', match: { pathPrefix: '/api' }, pool: 'api' }, { name: 'all', match: { pathPrefix: '/' }, pool: 'web' }],
    pools: {
      web: { backends: [{ name: 'a', url: 'http://127.0.0.1:9001', weight: 5 }, { name: 'c', url: 'http://127.0.0.1:9003' }] },
      api: { backends: [{ name: 'x', url: 'http://127.0.0.1:9010' }] },
    },
  }));
  const c = diffConfig(prev, next);
  assert.deepEqual(c.settings, ['workers', 'log']);
  assert.deepEqual(c.listeners, { added: ['web2'], removed: [], changed: ['web'] });
  assert.deepEqual(c.routes, { added: ['api'], removed: [], changed: [] });
  assert.deepEqual(c.pools, { added: ['api'], removed: [], changed: ['web'] });
  assert.deepEqual(c.backends, { added: ['web/c'], removed: ['web/b'], changed: ['web/a'] });
  assert.equal(describeChanges(c),
    'listeners web2 added, web changed; routes api added; pools api added, web changed; backends web/c added, web/b removed, web/a changed; settings workers, log');
  assert.deepEqual(diffConfig(next, prev).pools, { added: [], removed: ['api'], changed: ['web'] });
});
