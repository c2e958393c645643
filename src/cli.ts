import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfigFile } from './config/load.ts';
import { TandemError } from './errors.ts';

// Exit codes, as in DESIGN.md: 0 ok, 1 invalid input (config, arguments), 2 runtime failure.
const EXIT_INVALID = 1;
const EXIT_RUNTIME = 2;

const USAGE = `Usage: tandem <command> [options]

Commands:
  run -c FILE [--node ID]          run one instance (--node or TANDEM_NODE: which of ha.nodes this is)
  check -c FILE [--node ID]        validate a config; prints FILE:LINE:COL lines for each mistake
  demo                             demo backends and a tandem pair on loopback
  vip-agent --admin URL --hook PATH  the VIP sidecar: follows the admin event stream, runs the hook
  bench                            the benchmark: needs the development tree (npm run bench)

Run 'tandem <command> --help' for a command's options.
`;

const HELP: Record<string, string> = {
  run: `Usage: tandem run -c FILE [--node ID] [--workers N]

Runs one tandem instance from FILE.
  -c, --config FILE   the YAML config
  --node ID           which of ha.nodes this instance is (default: $TANDEM_NODE)
  --workers N         worker processes sharing the listeners (overrides 'workers');
                      0: no worker processes, the data plane runs in the main process
Signals: SIGHUP reloads the config; SIGTERM and SIGINT stop gracefully.
`,
  check: `Usage: tandem check -c FILE [--node ID]

Validates FILE. Exit 0 when valid; exit 1 with one 'FILE:LINE:COL: key.path: message'
line per mistake otherwise.
`,
  demo: `Usage: tandem demo

Starts demo backends and a tandem pair on loopback, the VIP hook in log-only mode, and
prints where to look. Stop it with Ctrl-C.
`,
  'vip-agent': `Usage: tandem vip-agent --admin URL --hook PATH [--token TOKEN]

Follows the admin event stream of a tandem instance and runs the VIP hook on each VIP
state change. Removes the VIP when the stream is lost for longer than the lease.
`,
  bench: `Usage: tandem bench

The benchmark compares tandem with other Node proxies; it lives in the development tree
(bench/, with autocannon), not in the product. In a checkout run: npm run bench -- [options]
`,
};

const OPTIONS: ParseArgsConfig['options'] = {
  config: { type: 'string', short: 'c' },
  node: { type: 'string' },
  workers: { type: 'string' },
  admin: { type: 'string' },
  hook: { type: 'string' },
  token: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

/** Runs the CLI; resolves to the exit code for commands that end, never for `run`/`demo`. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined ? EXIT_INVALID : 0;
  }
  if (!(command in HELP)) {
    process.stderr.write(`tandem: unknown command '${command}'\n\n${USAGE}`);
    return EXIT_INVALID;
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: rest, options: OPTIONS, strict: true, allowPositionals: false }).values as typeof values;
  } catch (err) {
    process.stderr.write(`tandem ${command}: ${(err as Error).message}\n\n${HELP[command]}`);
    return EXIT_INVALID;
  }
  if (values.help) {
    process.stdout.write(HELP[command]);
    return 0;
  }
  const str = (k: string) => values[k] as string | undefined;
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
        const admin = str('admin');
        const hook = str('hook');
        if (admin === undefined || hook === undefined) return usageError(command, 'needs --admin URL and --hook PATH');
        const { runVipAgent } = await import('./ha/vip-agent.ts');
        return await runVipAgent({ admin, hook, token: str('token') ?? process.env.TANDEM_ADMIN_TOKEN ?? null });
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
