import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

let backend: TestBackend;
let t: TandemProcess;
after(async () => {
  await t?.stop();
  await backend?.close();
});

test('the access log writes one JSON line per request with the fields operators need', async () => {
  backend = await startBackend({ name: 'logged' });
  const file = join(tmpdir(), `tandem-access-${process.pid}.log`);
  t = await startTandem(singlePool([{ name: 'logged', url: backend.url }], {}, { accessLog: { path: file } }));
  for (let i = 0; i < 5; i++) await (await request(`${t.url}/items/${i}?secret=1`, { headers: { host: 'shop.example' } })).body.text();
  await t.stop();
  const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 5);
  const first = lines[0];
  for (const key of ['time', 'client', 'method', 'host', 'path', 'status', 'bytes', 'duration', 'pool', 'backend', 'retries']) {
    assert.ok(key in first, `field ${key}`);
  }
  assert.equal(first.path, '/items/0', 'the query string stays out of the log');
  assert.equal(first.host, 'shop.example');
  assert.equal(first.status, 200);
  assert.equal(first.bytes, 'logged'.length);
  assert.equal(first.backend, 'logged');
  assert.equal(first.client, '127.0.0.1');
});

test('an access log that cannot be written is reported once and traffic goes on', async () => {
  const b = await startBackend({ name: 'plain' });
  const t2 = await startTandem(singlePool([{ name: 'plain', url: b.url }], {}, { accessLog: { path: '/nonexistent-tandem-dir/access.log' } }));
  try {
    const workers = t2.workerPids();
    for (let i = 0; i < 20; i++) assert.equal((await request(`${t2.url}/`)).statusCode, 200);
    assert.deepEqual(t2.workerPids(), workers, 'no worker died');
    assert.match(t2.output(), /access log \/nonexistent-tandem-dir\/access\.log: .*dropping access log lines/);
  } finally {
    await t2.stop();
    await b.close();
  }
});
