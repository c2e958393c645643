// The runtime commands: `tandem status`, `drain`, `disable`, `enable`, `weight`,
// `release` and `reload`, each one call to a running instance's admin API, as HAProxy's
// runtime API is used from a shell. Readable tables by default, the API's JSON with
// --json. Exit codes as for every command: 0 done, 1 the call was wrong (arguments, an
// unknown pool, backend or VIP, a missing or wrong token, a reload the instance
// refused), 2 the instance could not answer (unreachable, timed out, failed).

import { loadConfigFile } from '../config/load.ts';
import { errors } from '../errors.ts';
import { AdminClient } from '../ha/admin-client.ts';
import { statusTable, type StatusDocument } from './tables.ts';

export const CTL_COMMANDS = ['status', 'drain', 'disable', 'enable', 'weight', 'release', 'reload'] as const;
export type CtlCommand = (typeof CTL_COMMANDS)[number];

const EXIT_INVALID = 1;
const EXIT_RUNTIME = 2;
/** The admin address when neither --admin nor a config file says otherwise. */
export const DEFAULT_ADMIN = 'http://127.0.0.1:9901';
/** A reload prepares every worker, each within 10 s: wait longer than one. */
const RELOAD_TIMEOUT_MS = 30_000;
const CALL_TIMEOUT_MS = 10_000;

export interface CtlOptions {
  readonly command: CtlCommand;
  readonly args: readonly string[];
  /** --admin; null: from the config file, else DEFAULT_ADMIN. */
  readonly admin: string | null;
  /** -c FILE, for the admin address and token. */
  readonly config: string | null;
  readonly node: string | null;
  /** --token, else $TANDEM_ADMIN_TOKEN, else the config file's admin.token. */
  readonly token: string | null;
  readonly json: boolean;
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
}

/** Runs one runtime command; resolves to its exit code. */
export async function runCtl(o: CtlOptions): Promise<number> {
  const target = await resolveTarget(o);
  if (typeof target === 'number') return target;
  const client = new AdminClient(target.url, target.token);
  const fail = (code: number, message: string) => {
    o.err(`tandem ${o.command}: ${message}\n`);
    return code;
  };
  const call = async (method: string, path: string, body?: unknown, timeout = CALL_TIMEOUT_MS) => {
    try {
      const res = await client.send(method, path, body, timeout);
      const text = await res.text();
      let json: Record<string, unknown> | null = null;
      try {
        json = JSON.parse(text) as Record<string, unknown>;
      } catch {
        // Not JSON: an answer from something that is not tandem's admin API.
      }
      return { status: res.status, json, text };
    } catch (err) {
      return { status: 0, json: null, text: (err as Error).message };
    }
  };

  let path: string;
  let body: unknown;
  let method = 'POST';
  let timeout = CALL_TIMEOUT_MS;
  switch (o.command) {
    case 'status':
      if (o.args.length !== 0) return usage(o, 'takes no arguments');
      method = 'GET';
      path = '/api/v1/status';
      break;
    case 'drain':
    case 'disable':
    case 'enable':
    case 'weight': {
      const want = o.command === 'weight' ? 2 : 1;
      if (o.args.length !== want) return usage(o, o.command === 'weight' ? 'needs POOL/BACKEND and a weight' : 'needs POOL/BACKEND');
      const m = /^([^/]+)\/([^/]+)$/.exec(o.args[0]);
      if (m === null) return usage(o, `'${o.args[0]}' is not POOL/BACKEND`);
      path = `/api/v1/pools/${encodeURIComponent(m[1])}/backends/${encodeURIComponent(m[2])}/${o.command}`;
      if (o.command === 'weight') {
        const w = o.args[1];
        if (w !== 'reset' && !(/^(0|[1-9][0-9]{0,3})$/.test(w) && Number(w) <= 1000)) return usage(o, `the weight must be a whole number from 0 to 1000, or 'reset' (got '${w}')`);
        body = { weight: w === 'reset' ? null : Number(w) };
      } else {
        body = {};
      }
      break;
    }
    case 'release':
      if (o.args.length !== 1) return usage(o, 'needs a VIP name');
      path = `/api/v1/vips/${encodeURIComponent(o.args[0])}/release`;
      body = {};
      break;
    case 'reload':
      if (o.args.length !== 0) return usage(o, 'takes no arguments');
      path = '/api/v1/reload';
      body = {};
      timeout = RELOAD_TIMEOUT_MS;
      break;
  }

  const r = await call(method, path, body, timeout);
  if (r.status === 0) {
    return fail(EXIT_RUNTIME, `${errors.ADMIN_UNREACHABLE.code}: ${errors.ADMIN_UNREACHABLE.message} at ${client.url} (${r.text}); is tandem running, and is --admin (or admin.address) right?`);
  }
  if (r.json === null) return fail(EXIT_RUNTIME, `${client.url}${path} answered ${r.status} with something other than tandem's JSON: ${r.text.slice(0, 200)}`);
  if (r.status >= 400) {
    const code = String(r.json.error ?? r.json.code ?? `HTTP ${r.status}`);
    let message = `${code}: ${String(r.json.message ?? '')}`;
    if (r.status === 401) message += target.token === null ? ' (set TANDEM_ADMIN_TOKEN, or --token)' : ' (the token given was refused)';
    if (Array.isArray(r.json.errors) && r.json.errors.length > 0) message += '\n' + r.json.errors.join('\n');
    if (o.json) o.out(JSON.stringify(r.json, null, 2) + '\n');
    return fail(r.status >= 500 ? EXIT_RUNTIME : EXIT_INVALID, message);
  }
  if (o.json) {
    o.out(JSON.stringify(r.json, null, 2) + '\n');
    return 0;
  }
  o.out(describe(o, r.json));
  return 0;
}

/** The readable answer of a command that succeeded. */
function describe(o: CtlOptions, j: Record<string, unknown>): string {
  switch (o.command) {
    case 'status':
      return statusTable(j as unknown as StatusDocument, Date.now());
    case 'drain':
    case 'disable':
    case 'enable':
      return `${j.pool}/${j.backend}: ${j.state} (admin ${j.admin})\n`;
    case 'weight':
      return j.runtimeWeight === null
        ? `${j.pool}/${j.backend}: weight ${j.weight}, as configured (effective ${j.effectiveWeight})\n`
        : `${j.pool}/${j.backend}: weight ${j.runtimeWeight} until the next reload (configured ${j.weight}, effective ${j.effectiveWeight})\n`;
    case 'release':
      return `${j.vip}: released (the peer takes it over)\n`;
    case 'reload':
      return 'reloaded\n';
  }
}

/** The admin URL and token: flags first, then the environment, then the config file. */
async function resolveTarget(o: CtlOptions): Promise<{ url: string; token: string | null } | number> {
  let url = o.admin;
  let token = o.token ?? nonEmpty(process.env.TANDEM_ADMIN_TOKEN);
  if (o.config !== null && (url === null || token === null)) {
    const loaded = await loadConfigFile(o.config, { env: process.env, node: o.node });
    if (!loaded.ok) {
      o.err(`tandem ${o.command}: cannot read the admin address from ${o.config}:\n${loaded.errors.join('\n')}\n`);
      return EXIT_INVALID;
    }
    const admin = loaded.config.admin;
    if (admin === null) {
      if (url === null) {
        o.err(`tandem ${o.command}: ${o.config} has no admin section, so its instance has no admin API\n`);
        return EXIT_INVALID;
      }
    } else {
      url ??= `http://${connectHost(admin.host)}:${admin.port}`;
      token ??= admin.token;
    }
  }
  url ??= DEFAULT_ADMIN;
  if (!/^https?:\/\//.test(url)) url = `http://${url}`;
  try {
    new URL(url);
  } catch {
    return usage(o, `--admin '${o.admin}' is not a URL such as http://127.0.0.1:9901`);
  }
  return { url, token };
}

/** Where to connect for an address bound as `host`: a wildcard bind is reached on loopback. */
function connectHost(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

function nonEmpty(s: string | undefined): string | null {
  return s === undefined || s === '' ? null : s;
}

function usage(o: CtlOptions, message: string): number {
  o.err(`tandem ${o.command}: ${message}\n\n${CTL_HELP[o.command]}`);
  return EXIT_INVALID;
}

const COMMON = `  --admin URL         the instance's admin API (default: admin.address of -c FILE, else ${DEFAULT_ADMIN})
  -c, --config FILE   read the admin address and token from this config
  --token TOKEN       admin bearer token (default: $TANDEM_ADMIN_TOKEN, then admin.token of -c FILE)
  --json              print the API's JSON answer instead of a table
Exit 0: done; 1: a wrong call (arguments, unknown name, missing or wrong token,
refused reload); 2: the instance could not answer.
`;

/** `tandem <command> --help` of each runtime command. */
export const CTL_HELP: Readonly<Record<CtlCommand, string>> = {
  status: `Usage: tandem status [--admin URL | -c FILE] [--json]

Shows listeners, every pool's backends (state and since when, health downtime, weight,
requests and errors) and the VIPs of a running instance.
${COMMON}`,
  drain: `Usage: tandem drain POOL/BACKEND [--admin URL | -c FILE] [--json]

Sends no new requests to the backend; requests in flight finish. Undo with enable.
${COMMON}`,
  disable: `Usage: tandem disable POOL/BACKEND [--admin URL | -c FILE] [--json]

Drains the backend and keeps it out whatever its health checks say. Undo with enable.
${COMMON}`,
  enable: `Usage: tandem enable POOL/BACKEND [--admin URL | -c FILE] [--json]

Undoes drain and disable: the backend takes requests again when healthy.
${COMMON}`,
  weight: `Usage: tandem weight POOL/BACKEND N|reset [--admin URL | -c FILE] [--json]

Sets the backend's weight to N (0 to 1000; 0 takes no new requests) until the next
reload, which goes back to the configured weight; 'reset' goes back now.
${COMMON}`,
  release: `Usage: tandem release VIP [--admin URL | -c FILE] [--json]

Gives up a VIP this instance holds: its peer takes it over (before maintenance).
${COMMON}`,
  reload: `Usage: tandem reload [--admin URL | -c FILE] [--json]

Reloads the instance's config file, as SIGHUP does. A file that does not validate, or
that changes a key only a restart can apply, is refused whole: the errors are printed
and the running config is kept.
${COMMON}`,
};
