import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { once } from 'node:events';
import { Agent, request } from 'undici';
import { startBackend, type TestBackend } from '../helpers/backends.ts';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';

const dir = mkdtempSync(join(tmpdir(), 'tandem-tls-'));

/** A self-signed certificate and key for `cn`, made with openssl. */
function selfSigned(cn: string): { cert: string; key: string } {
  const cert = join(dir, `${cn}.crt`);
  const key = join(dir, `${cn}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${cn}`,
    '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

/** The CN of the certificate the listener presents now. */
async function presentedCn(port: number): Promise<string> {
  const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
  await once(socket, 'secureConnect');
  const cn = socket.getPeerCertificate().subject.CN as string;
  socket.destroy();
  return cn;
}

let backend: TestBackend;
let t: TandemProcess;
after(async () => {
  await t?.stop();
  await backend?.close();
});

test('an https listener proxies, and a certificate renewed in place is served after a reload', async () => {
  backend = await startBackend({ name: 'secure' });
  const first = selfSigned('first.tandem.test');
  const second = selfSigned('second.tandem.test');
  const live = { cert: join(dir, 'live.crt'), key: join(dir, 'live.key') };
  copyFileSync(first.cert, live.cert);
  copyFileSync(first.key, live.key);
  const conf = singlePool([{ name: 'secure', url: backend.url }], {}, {
    listeners: [{ name: 'web', address: '127.0.0.1:0', tls: live }],
  });
  t = await startTandem(conf);
  const port = Number(t.listeners.get('web')!.split(':')[1]);
  const agent = new Agent({ connect: { rejectUnauthorized: false } });
  const r = await request(`https://127.0.0.1:${port}/`, { dispatcher: agent });
  assert.equal(r.statusCode, 200);
  assert.equal(await r.body.text(), 'secure');
  assert.equal(await presentedCn(port), 'first.tandem.test');

  copyFileSync(second.cert, live.cert);
  copyFileSync(second.key, live.key);
  assert.equal(await t.reload(conf), 'reloaded');
  assert.equal(await presentedCn(port), 'second.tandem.test');
  await agent.close();
});
