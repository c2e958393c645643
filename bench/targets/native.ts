// HAProxy and nginx as the benchmark runs them: one thread / one worker each, in the
// foreground as children of the benchmark, on config files written into the run's
// temporary directory, keeping connections to the origin alive as tandem does. The
// HTTP/1.1 load test (targets/index.ts) and the HTTP/2 case (bench/h2.ts) start them
// from here; only the listener differs.

import { accessSync, constants, mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { delimiter, join } from 'node:path';
import { spawnService, type Service } from './process.ts';

/** Debian keeps daemons in sbin, which a user's PATH often lacks. */
const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** Absolute path of an executable on PATH or in an sbin directory; null when there is none. */
export function findBinary(name: string): string | null {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((d) => d !== ''), ...SBIN];
  for (const dir of dirs) {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // Not in this one.
    }
  }
  return null;
}

/** Why a native target cannot run here, or null when it can. */
export function missingReason(name: 'haproxy' | 'nginx' | 'wrk'): string | null {
  return findBinary(name) === null ? `${name} is not installed (Debian: apt-get install ${name})` : null;
}

/**
 * A port of 127.0.0.1 that was free a moment ago. HAProxy and nginx cannot say which
 * port they bound to 0, so they get one picked here; another process could take it in
 * between, in which case the server fails to start and says so.
 */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', resolve);
  });
  const { port } = s.address() as AddressInfo;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

/** TLS and HTTP/2 on the listener (the h2 case); plain HTTP/1.1 without. */
export interface NativeTls {
  readonly cert: string;
  readonly key: string;
  /** Certificate and key in one file, as HAProxy wants them. */
  readonly combined: string;
}

export interface NativeOptions {
  /** Where the config, pid file, logs and temp files go: the run's temporary directory. */
  readonly dir: string;
  readonly port: number;
  /** The origin, `host:port`. */
  readonly upstream: string;
  readonly tls?: NativeTls;
}

/** HAProxy on one thread, X-Forwarded-For added, idle origin connections shared by every client. */
export function haproxyConfig(o: NativeOptions): string {
  const tls = o.tls === undefined ? '' : ` ssl crt ${o.tls.combined} alpn h2,http/1.1`;
  return `# Written by bench/targets/native.ts.
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  option forwardfor
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:${o.port}${tls}
  default_backend be
backend be
  # Any idle connection to the origin serves any client's next request, as tandem's
  # per-backend pools do ('safe', the default, keeps each client's first one private).
  http-reuse always
  server app1 ${o.upstream}
`;
}

/** nginx with one worker, X-Forwarded-For added, keep-alive to the origin, nothing outside `dir`. */
export function nginxConfig(o: NativeOptions): string {
  const temp = join(o.dir, 'nginx-temp');
  const listen = o.tls === undefined ? '' : ' ssl http2';
  const certs = o.tls === undefined ? '' : `\n    ssl_certificate ${o.tls.cert};\n    ssl_certificate_key ${o.tls.key};`;
  return `# Written by bench/targets/native.ts; started with -g 'daemon off;'.
worker_processes 1;
pid ${join(o.dir, 'nginx.pid')};
error_log ${join(o.dir, 'nginx-error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  # Every default path of Debian's build is under /var; keep all of them here.
  client_body_temp_path ${temp}/body;
  proxy_temp_path ${temp}/proxy;
  fastcgi_temp_path ${temp}/fastcgi;
  uwsgi_temp_path ${temp}/uwsgi;
  scgi_temp_path ${temp}/scgi;
  # nginx closes a client connection after 1000 requests by default; no other target does.
  keepalive_requests 10000000;
  upstream app {
    server ${o.upstream};
    # Idle origin connections kept, as many as the Node proxies' pools allow (128).
    keepalive 128;
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:${o.port}${listen};${certs}
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }
  }
}
`;
}

/** Writes haproxy.cfg into `o.dir` and starts `haproxy -db` on it; resolves once the port accepts. */
export function startHaproxy(o: NativeOptions): Promise<Service> {
  const file = join(o.dir, 'haproxy.cfg');
  writeFileSync(file, haproxyConfig(o));
  return spawnService(['-db', '-f', file], { command: required('haproxy'), listening: o.port });
}

/** Writes nginx.conf into `o.dir` and starts nginx in the foreground on it; resolves once the port accepts. */
export function startNginx(o: NativeOptions): Promise<Service> {
  const file = join(o.dir, 'nginx.conf');
  writeFileSync(file, nginxConfig(o));
  mkdirSync(join(o.dir, 'nginx-temp'), { recursive: true });
  // -e: the log nginx writes to before it has read the config, otherwise /var/log/nginx.
  return spawnService(['-g', 'daemon off;', '-p', o.dir, '-e', join(o.dir, 'nginx-error.log'), '-c', file], {
    command: required('nginx'),
    listening: o.port,
  });
}

function required(name: 'haproxy' | 'nginx'): string {
  const path = findBinary(name);
  if (path === null) throw new Error(missingReason(name)!);
  return path;
}
