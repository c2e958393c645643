// Certificates for TLS tests, made with openssl in a temp dir: a CA of the test's own,
// and leaf certificates it signs for the names given (subjectAltName DNS entries, or
// only a CN when no names are given).

import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CertFiles {
  readonly cert: string;
  readonly key: string;
}

export class TestCa {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
  private serial = 1;

  constructor(name = 'tandem test CA') {
    this.dir = mkdtempSync(join(tmpdir(), 'tandem-certs-'));
    this.cert = join(this.dir, 'ca.crt');
    this.key = join(this.dir, 'ca.key');
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', `/CN=${name}`,
      '-keyout', this.key, '-out', this.cert, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  }

  /** A leaf for `cn` with these DNS/IP names (e.g. ['api.test', '*.apps.test', 'IP:127.0.0.1']); `client` makes a client certificate. */
  issue(cn: string, names: readonly string[] = [], client = false): CertFiles {
    const base = join(this.dir, `${cn.replace(/[^a-z0-9.-]/gi, '_')}-${this.serial}`);
    const key = `${base}.key`;
    const csr = `${base}.csr`;
    const cert = `${base}.crt`;
    const ext = `${base}.ext`;
    openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${cn}`, '-keyout', key, '-out', csr]);
    const san = names.map((n) => (n.startsWith('IP:') ? n : `DNS:${n}`)).join(',');
    writeFileSync(ext, `${san === '' ? '' : `subjectAltName=${san}\n`}extendedKeyUsage=${client ? 'clientAuth' : 'serverAuth'}\n`);
    openssl(['x509', '-req', '-in', csr, '-CA', this.cert, '-CAkey', this.key, '-set_serial', String(this.serial++), '-days', '2', '-out', cert, '-extfile', ext]);
    return { cert, key };
  }
}

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' });
}
