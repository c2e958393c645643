import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfigFile } from './config/load.ts';
import { CTL_COMMANDS, CTL_HELP, DEFAULT_ADMIN, type CtlCommand } from './ctl/commands.ts';
import { TandemError } from './errors.ts';
import { isLogLevel, LOG_LEVELS, overrideLogLevel } from './log.ts';

// Exit codes, as in DESIGN.md: 0 ok, 1 invalid input (config, arguments), 2 runtime failure.
const EXIT_INVALID = 1;
const EXIT_RUNTIME = 2;

const USAGE = `Usage: tandem <command> [options]

Commands:
  run -c FILE [--node ID]          run one instance (--node or TANDEM_NODE: which of ha.nodes this is)
  check -c FILE [--node ID]        validate a config; prints FILE:LINE:COL lines for each mistake
  demo                             demo backends, a tandem pair and a relay that follows vip-a, on loopback
  vip-agent --admin URL            the VIP sidecar: follows the admin event stream, runs the hook
  drill -c FILE | --admin URL...   hand every VIP over and back while probing it; exit 0 when no probe failed
  bench                            the benchmark: needs the development tree (npm run bench)
  version                          print tandem's version and Node's

Runtime commands, each one call to a running instance's admin API:
  status                           listeners, backends (state, since when, downtime, weight), VIPs
  drain POOL/BACKEND               no new requests to the backend; those in flight finish
  disable POOL/BACKEND             drain, and keep it out whatever its health checks say
  enable POOL/BACKEND              undo drain and disable
  weight POOL/BACKEND N|reset      the backend's weight until the next reload
  release VIP                      give up a VIP this instance holds (the peer takes it)
  reload                           reload the config file, as SIGHUP does
  Their options: --admin URL (default: admin.address of -c FILE, else ${DEFAULT_ADMIN}),
  -c FILE, --token TOKEN (default: $TANDEM_ADMIN_TOKEN, then admin.token of -c FILE), --json.

Options: -h, --help (also after a command: its options); -V, --version.
`;

const HELP: Record<string, string> = {
  run: `Usage: tandem run -c FILE [--node ID] [--workers N] [--log-level LEVEL]

Runs one tandem instance from FILE.
  -c, --config FILE   the YAML config
  --node ID           which of ha.nodes this instance is (default: $TANDEM_NODE)
  --workers N         worker processes sharing the listeners (overrides 'workers');
                      0: no worker processes, the data plane runs in the main process
  --log-level LEVEL   ${LOG_LEVELS.join(', ')} (overrides 'log.level'; default: $TANDEM_LOG_LEVEL)
Signals: SIGHUP reloads the config; SIGTERM and SIGINT stop gracefully.
`,
  check: `Usage: tandem check -c FILE [--node ID]

Validates FILE. Exit 0 when valid; exit 1 with one 'FILE:LINE:COL: key.path: message'
line per mistake otherwise.
`,
  demo: `Usage: tandem demo

Starts demo backends and a tandem pair on loopback, the VIP hook in log-only mode, and a
relay on 127.0.0.1:8088 that sends each new connection to the holder of vip-a. Prints a
probe command and what to kill. Stop it with Ctrl-C.
`,
  'vip-agent': `Usage: tandem vip-agent --admin URL [--hook PATH|builtin] [--token TOKEN] [--log-level LEVEL]

Follows the admin event stream of a tandem instance and runs the VIP hook on each VIP
state change. Removes the VIP when the stream is lost for longer than the lease.
  --hook builtin   (the default) adds the address and sends the gratuitous ARP through an
                   announcer started with the agent (needs perl, NET_ADMIN and NET_RAW)
  --hook PATH      runs PATH STATE VIP ADDRESS/PREFIX INTERFACE instead
`,
  drill: `Usage: tandem drill (-c FILE | --admin URL --admin URL) [--vip NAME] [--url URL] [--token TOKEN]

A planned disaster-recovery drill of a running pair. For each VIP: checks that its holder
and a peer are ready, releases it on the holder, then hands it back (a release on the
peer, or the preferred node's preemption when FILE says so), while opening a new
connection to the VIP (or to --url) every 10 ms. Prints each move's time and failed probes.
  -c, --config FILE   find the nodes' admin APIs from ha.nodes and admin.address (port)
  --admin URL         a node's admin API; repeat for each node (overrides FILE's addresses)
  --vip NAME          drill only this VIP; repeatable
  --url URL           probe with an HTTP GET on a new connection to URL instead
  --token TOKEN       admin bearer token (default: $TANDEM_ADMIN_TOKEN, then admin.token)
Exit 0: every VIP moved both ways with no failed probe; 2: otherwise; 1: bad arguments.
`,
  bench: `Usage: tandem bench

The benchmark compares tandem with other Node proxies; it lives in the development tree
(bench/, with autocannon), not in the product. In a checkout run: npm run bench -- [options]
`,
  version: `Usage: tandem version (or tandem --version)

Prints tandem's version (from its package.json) and the version of Node running it.
`,
  ...CTL_HELP,
};

const OPTIONS: ParseArgsConfig['options'] = {
  config: { type: 'string', short: 'c' },
  node: { type: 'string' },
  workers: { type: 'string' },
  admin: { type: 'string', multiple: true },
  url: { type: 'string' },
  vip: { type: 'string', multiple: true },
  hook: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  'log-level': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

/** package.json's version; src/ and the packaged dist/ are both one level below it. */
function version(): string {
  return (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/** Runs the CLI; resolves to the exit code for commands that end, never for `run`/`demo`. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === '--version' || command === '-V' || (command === 'version' && rest.length === 0)) {
    process.stdout.write(`tandem ${version()} (node ${process.versions.node})\n`);
    return 0;
  }
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined ? EXIT_INVALID : 0;
  }
  if (!(command in HELP)) {
    process.stderr.write(`tandem: unknown command '${command}'\n\n${USAGE}`);
    return EXIT_INVALID;
  }
  const runtimeCommand = (CTL_COMMANDS as readonly string[]).includes(command);
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: rest, options: OPTIONS, strict: true, allowPositionals: runtimeCommand }) as { values: typeof values; positionals: string[] });
  } catch (err) {
    process.stderr.write(`tandem ${command}: ${(err as Error).message}\n\n${HELP[command]}`);
    return EXIT_INVALID;
  }
  if (values.help) {
    process.stdout.write(HELP[command]);
    return 0;
  }
  const str = (k: string) => values[k] as string | undefined;
  const list = (k: string) => (values[k] as string[] | undefined) ?? [];
  const logLevel = str('log-level');
  if (logLevel !== undefined) {
    if (!isLogLevel(logLevel)) return usageError(command, `--log-level must be one of ${LOG_LEVELS.join(', ')}`);
    overrideLogLevel(logLevel);
  }
  try {
    switch (command) {
      case 'check': {
        const file = str('config');
        if (file === undefined) return usageError(command, 'missing -c FILE');
        const node = str('node') ?? process.env.TANDEM_NODE ?? null;
        const result = await loadConfigFile(file, { env: process.env, node });
        if (!result.ok) {
          for (const line of result.errors) process.stderr.write(line + '\n');
          return EXIT_INVALID;
        }
        process.stdout.write(`${file}: ok\n`);
        return 0;
      }
      case 'run': {
        const file = str('config');
        if (file === undefined) return usageError(command, 'missing -c FILE');
        const workers = str('workers');
        if (workers !== undefined && !/^(0|[1-9][0-9]*)$/.test(workers)) return usageError(command, '--workers must be a whole number (0: the data plane runs in the main process)');
        const { run } = await import('./run.ts');
        return await run({
          file,
          node: str('node') ?? process.env.TANDEM_NODE ?? null,
          workers: workers === undefined ? null : Number(workers),
        });
      }
      case 'demo': {
        const { demo } = await import('./demo.ts');
        return await demo();
      }
      case 'vip-agent': {
        const admin = list('admin').at(-1);
        const hook = str('hook') ?? 'builtin';
        if (admin === undefined) return usageError(command, 'needs --admin URL');
        const { raisePriority, runVipAgent } = await import('./ha/vip-agent.ts');
        raisePriority();
        return await runVipAgent({ admin, hook, token: str('token') ?? process.env.TANDEM_ADMIN_TOKEN ?? null });
      }
      case 'drill': {
        const { runDrill } = await import('./ha/drill.ts');
        const token = str('token') ?? process.env.TANDEM_ADMIN_TOKEN ?? null;
        return await runDrill({ config: str('config') ?? null, admin: list('admin'), token, url: str('url') ?? null, vips: list('vip') });
      }
      case 'version':
        process.stdout.write(`tandem ${version()} (node ${process.versions.node})\n`);
        return 0;
      case 'status': case 'drain': case 'disable': case 'enable': case 'weight': case 'release': case 'reload': {
        const { runCtl } = await import('./ctl/commands.ts');
        const admin = list('admin');
        if (admin.length > 1) return usageError(command, 'takes one --admin URL');
        return await runCtl({
          command: command as CtlCommand, args: positionals, admin: admin[0] ?? null, config: str('config') ?? null,
          node: str('node') ?? process.env.TANDEM_NODE ?? null, token: str('token') ?? null, json: values.json === true,
          out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t),
        });
      }
      case 'bench':
        // bench/ and autocannon are development tools: an image or an installed package has neither.
        process.stderr.write('tandem bench: the benchmark needs the development tree; in a checkout run: npm run bench\n');
        return EXIT_INVALID;
    }
  } catch (err) {
    if (err instanceof TandemError) {
      process.stderr.write(`tandem ${command}: ${err.code}: ${err.message}\n`);
      return err.code === 'TANDEM_ERR_CONFIG_INVALID' || err.code === 'TANDEM_ERR_ARGUMENTS' ? EXIT_INVALID : EXIT_RUNTIME;
    }
    process.stderr.write(`tandem ${command}: ${(err as Error).stack ?? String(err)}\n`);
    return EXIT_RUNTIME;
  }
  return 0;
}

function usageError(command: string, message: string): number {
  process.stderr.write(`tandem ${command}: ${message}\n\n${HELP[command]}`);
  return EXIT_INVALID;
}

if (import.meta.main) {
  main(process.argv.slice(2)).then((code) => {
    if (code !== -1) process.exitCode = code;
  });
}
