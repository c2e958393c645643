import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import type { SecureContext, SecureContextOptions, TlsOptions } from 'node:tls';
import type { ListenerTlsConfig } from '../config/types.ts';

// The certificates of one TLS listener. Each certificate is filed under the names it
// carries (subjectAltName DNS entries, or its CN when it has none), exact names and
// `*.example.com` wildcards apart; a handshake's SNI name picks the certificate, and
// the first certificate of the list answers names none of them carry (and clients that
// send no SNI). Reading the files again on reload serves certificates renewed in place.

type Tls = typeof import('node:tls');

export class Certificates {
  private readonly tls: Tls;
  private exact = new Map<string, SecureContext>();
  private wildcard = new Map<string, SecureContext>();
  private base: SecureContextOptions = {};
  private fallback: SecureContext | null = null;

  constructor(config: ListenerTlsConfig) {
    // node:tls is loaded only where a listener terminates TLS.
    this.tls = process.getBuiltinModule('node:tls');
    this.load(config);
  }

  /** Reads every file of `config` again; new handshakes use what it holds from now on. */
  load(config: ListenerTlsConfig): void {
    const shared: SecureContextOptions = {
      minVersion: config.minVersion,
      ...(config.ciphers === null ? {} : { ciphers: config.ciphers }),
      ...(config.clientCa === null ? {} : { ca: readFileSync(config.clientCa) }),
    };
    const exact = new Map<string, SecureContext>();
    const wildcard = new Map<string, SecureContext>();
    let first: SecureContextOptions | null = null;
    let firstContext: SecureContext | null = null;
    for (const c of config.certificates) {
      const options = { ...shared, cert: readFileSync(c.cert), key: readFileSync(c.key) };
      const context = this.tls.createSecureContext(options);
      first ??= options;
      firstContext ??= context;
      // An earlier certificate keeps a name that a later one also carries.
      for (const name of certificateNames(options.cert)) {
        if (name.startsWith('*.')) {
          if (!wildcard.has(name.slice(1))) wildcard.set(name.slice(1), context);
        } else if (!exact.has(name)) {
          exact.set(name, context);
        }
      }
    }
    this.exact = exact;
    this.wildcard = wildcard;
    this.base = first!;
    this.fallback = firstContext;
  }

  /** The context for an SNI name: exact name first, then the wildcard one label up, then the default. */
  select(servername: string): SecureContext | null {
    const name = servername.toLowerCase();
    const exact = this.exact.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    // A wildcard covers one label only (RFC 6125 §6.4.3), as clients check it.
    if (dot > 0) {
      const wild = this.wildcard.get(name.slice(dot));
      if (wild !== undefined) return wild;
    }
    return this.fallback;
  }

  /** Options of the default certificate, for createServer() and setSecureContext(). */
  defaults(): SecureContextOptions {
    return this.base;
  }

  /** Server options for node:https / node:http2: default certificate, SNI, client certificates, ALPN. */
  serverOptions(config: ListenerTlsConfig, http2: boolean): TlsOptions {
    return {
      ...this.base,
      SNICallback: (servername, done) => done(null, this.select(servername) ?? undefined),
      requestCert: config.clientCa !== null,
      rejectUnauthorized: config.clientCa !== null,
      ...(http2 ? { ALPNProtocols: ['h2', 'http/1.1'] } : {}),
    };
  }
}

/** The DNS names a certificate is for: its subjectAltName DNS entries, or its CN. */
export function certificateNames(pem: Buffer): string[] {
  const x509 = new X509Certificate(pem);
  const san = x509.subjectAltName;
  if (san !== undefined) {
    const names = san.split(', ').filter((e) => e.startsWith('DNS:')).map((e) => e.slice(4).toLowerCase());
    if (names.length > 0) return names;
  }
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x509.subject);
  return cn === null ? [] : [cn[1].toLowerCase()];
}
