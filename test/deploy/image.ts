// The Dockerfile without a Docker engine: its stages as dockerfile-ast parses them, and a
// root filesystem in a temp directory in which a stage's RUN lines and its ENTRYPOINT
// and CMD run for real under bubblewrap (mount, user and pid namespaces), with the
// image's user, environment, capabilities and mounted config.
//
// The base image, node:24-slim, is Debian with Node in /usr/local: the root here takes
// /usr from this Debian host, Node from the project's pinned Node 24 and npm from the
// host's npm, both at the paths the official image has them. `apt-get install` lines
// are not run: the packages they name must be installed on the host instead.

import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, copyFile, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { NODE_DIR, sh, type Ran } from './pack.ts';

export interface Stage {
  readonly name: string;
  /** An image (node:24-slim) or an earlier stage's name. */
  readonly base: string;
  readonly instructions: readonly Instruction[];
}

/** The stages in file order; the last is what `docker build` without --target makes. */
export function readStages(text: string): Stage[] {
  const stages: { name: string; base: string; instructions: Instruction[] }[] = [];
  for (const i of DockerfileParser.parse(text).getInstructions()) {
    if (i.getKeyword() === 'FROM') {
      const from = i as unknown as { getImage(): string | null; getBuildStage(): string | null };
      stages.push({ name: from.getBuildStage() ?? `stage${stages.length}`, base: from.getImage() ?? '', instructions: [] });
    } else {
      if (stages.length === 0) throw new Error(`${i.getKeyword()} before any FROM`);
      stages[stages.length - 1].instructions.push(i);
    }
  }
  return stages;
}

/** What an image built up to `target` holds, following FROM through earlier stages. */
export interface ImageConfig {
  readonly stages: readonly Stage[];
  readonly env: Record<string, string>;
  user: string;
  workdir: string;
  readonly entrypoint: string[];
  readonly cmd: string[];
  healthcheck: string[] | null;
  readonly expose: number[];
  /** Packages the apt-get lines install. */
  readonly apt: string[];
  /** RUN lines other than apt-get ones, in order. */
  readonly runs: string[];
  /** COPY --from=STAGE lines: [stage, source, destination]. */
  readonly copies: [string, string, string][];
}

// What node:24-slim sets (docker inspect): user root, Node's and the system's bin dirs.
const BASE_ENV = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' };

export function imageConfig(stages: readonly Stage[], target: string): ImageConfig {
  const chain: Stage[] = [];
  for (let name: string | undefined = target; name !== undefined;) {
    const stage = stages.find((s) => s.name === name);
    if (stage === undefined) throw new Error(`no stage ${name}`);
    chain.unshift(stage);
    name = stages.some((s) => s.name === stage.base) ? stage.base : undefined;
  }
  const image: ImageConfig = { stages: chain, env: { ...BASE_ENV }, user: '0:0', workdir: '/', entrypoint: [], cmd: [], healthcheck: null, expose: [], apt: [], runs: [], copies: [] };
  for (const stage of chain) {
    for (const i of stage.instructions) {
      const args = i.getArgumentsContent() ?? '';
      const json = () => (i as unknown as { getJSONStrings(): { getJSONValue(): string }[] }).getJSONStrings().map((s) => s.getJSONValue());
      switch (i.getKeyword()) {
        case 'ENV':
          for (const p of (i as unknown as { getProperties(): { getName(): string; getValue(): string | null }[] }).getProperties()) image.env[p.getName()] = p.getValue() ?? '';
          break;
        case 'USER': image.user = args.trim(); break;
        case 'WORKDIR': image.workdir = args.trim(); break;
        case 'EXPOSE': image.expose.push(...args.trim().split(/\s+/).map((p) => Number(p.replace(/\/tcp$/, '')))); break;
        case 'ENTRYPOINT': image.entrypoint.splice(0, Infinity, ...json()); image.cmd.length = 0; break;
        case 'CMD': image.cmd.splice(0, Infinity, ...json()); break;
        case 'HEALTHCHECK': image.healthcheck = JSON.parse(args.replace(/^CMD\s+/, '')) as string[]; break;
        case 'RUN': {
          if (/^apt-get update\b/.test(args)) {
            const install = /apt-get install ((?:-\S+\s+)*)([a-z0-9.+ -]+?)\s*(&&|$)/.exec(args);
            if (install === null) throw new Error(`an apt-get line that installs nothing: ${args}`);
            image.apt.push(...install[2].trim().split(/\s+/));
          } else {
            image.runs.push(args);
          }
          break;
        }
        case 'COPY': {
          const from = (i as unknown as { getFromFlag(): { getValue(): string | null } | null }).getFromFlag()?.getValue();
          const parts = i.getArguments().map((a) => a.getValue());
          if (from) image.copies.push([from, parts[0], parts[parts.length - 1]]);
          break;
        }
      }
    }
  }
  return image;
}

/** Host /etc entries a Debian userland needs (name lookup, libraries, CA certificates). */
const HOST_ETC = ['resolv.conf', 'nsswitch.conf', 'host.conf', 'gai.conf', 'services', 'protocols', 'ld.so.cache', 'ld.so.conf', 'ld.so.conf.d', 'ssl', 'ca-certificates', 'alternatives', 'iproute2'];
const NPM = '/usr/lib/node_modules/npm';

export interface SandboxRun {
  readonly child: ChildProcess;
  /** The host pid of the command, PID 1 in its pid namespace. */
  readonly pid: Promise<number>;
  output(): string;
  readonly exited: Promise<number | null>;
}

/** A root filesystem standing for the image: /usr/local, /etc, /root and /home/node of its own. */
export class ImageRoot {
  readonly dir: string;
  private readonly binds: [string, string][];

  private constructor(dir: string, binds: [string, string][]) {
    this.dir = dir;
    this.binds = binds;
  }

  /** Lays out node:24-slim's tree in `dir`; `hosts` lines go to /etc/hosts, `files` are mounted read-only (image path -> host path). */
  static async create(dir: string, opts: { hosts: string[]; files: Record<string, string> }): Promise<ImageRoot> {
    await chmod(dir, 0o755);
    for (const d of ['usr', 'proc', 'dev', 'tmp', 'run', 'root', 'home/node', 'usr/local/bin', 'usr/local/lib/node_modules/npm', 'etc']) await mkdir(join(dir, d), { recursive: true });
    for (const l of ['bin', 'sbin', 'lib', 'lib64']) await symlink(`usr/${l}`, join(dir, l));
    await chmod(join(dir, 'tmp'), 0o1777);
    await writeFile(join(dir, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/bash\nnode:x:1000:1000::/home/node:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n');
    await writeFile(join(dir, 'etc/group'), 'root:x:0:\nnode:x:1000:\nnogroup:x:65534:\n');
    // The host's own entries first: the registry may be reached through one of them.
    await writeFile(join(dir, 'etc/hosts'), [await readFile('/etc/hosts', 'utf8'), ...opts.hosts].join('\n') + '\n');
    await symlink('../lib/node_modules/npm/bin/npm-cli.js', join(dir, 'usr/local/bin/npm'));
    await symlink('../lib/node_modules/npm/bin/npx-cli.js', join(dir, 'usr/local/bin/npx'));
    const binds: [string, string][] = [[join(NODE_DIR, 'node'), '/usr/local/bin/node'], [NPM, '/usr/local/lib/node_modules/npm']];
    for (const name of HOST_ETC) {
      const r = await sh('test', ['-e', `/etc/${name}`]);
      if (r.code === 0) binds.push([`/etc/${name}`, `/etc/${name}`]);
    }
    // The builder's npm settings (registry, CA file), where the image's npm looks for its global config.
    if ((await sh('test', ['-f', '/etc/npmrc'])).code === 0) binds.push(['/etc/npmrc', '/usr/local/etc/npmrc']);
    for (const [inImage, onHost] of Object.entries(opts.files)) binds.push([onHost, inImage]);
    // Mount points exist before any unprivileged run needs them.
    for (const [src, dest] of binds) {
      const isDir = (await sh('test', ['-d', src])).code === 0;
      await mkdir(join(dir, isDir ? dest : dirname(dest)), { recursive: true });
      if (!isDir) await writeFile(join(dir, dest), '', { flag: 'a' });
    }
    return new ImageRoot(dir, binds);
  }

  /** Copies a host file into the image (what COPY --from leaves). */
  async put(hostFile: string, inImage: string): Promise<void> {
    await mkdir(join(this.dir, dirname(inImage)), { recursive: true });
    await copyFile(hostFile, join(this.dir, inImage));
  }

  /**
   * bwrap arguments for a process in the image: as root with the image writable (a RUN
   * line), or as the image's USER on a read-only image with a fresh /tmp, in a pid
   * namespace of its own in which the command is PID 1, as in a container.
   */
  private bwrap(opts: { user: string; writable: boolean; env: Record<string, string>; workdir?: string }): string[] {
    const [uid, gid = uid] = opts.user.split(':');
    const root = uid === '0';
    const args: string[] = [];
    // A non-root USER is a real unprivileged user here too: no capability, and files the
    // image's root owns are not its own.
    if (!root) args.push('setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--inh-caps=-all', '--');
    args.push('bwrap', '--die-with-parent', '--unshare-pid', '--unshare-ipc', '--unshare-uts');
    if (!root) args.push('--unshare-user', '--uid', uid, '--gid', gid);
    args.push(opts.writable ? '--bind' : '--ro-bind', this.dir, '/', '--ro-bind', '/usr', '/usr');
    args.push(opts.writable ? '--bind' : '--ro-bind', join(this.dir, 'usr/local'), '/usr/local');
    for (const [src, dest] of this.binds) args.push('--ro-bind', src, dest);
    args.push('--proc', '/proc', '--dev', '/dev');
    if (!opts.writable) args.push('--tmpfs', '/tmp', '--tmpfs', '/run');
    args.push('--clearenv');
    const home = root ? '/root' : '/home/node';
    for (const [k, v] of Object.entries({ HOME: home, ...opts.env })) args.push('--setenv', k, v);
    args.push('--chdir', opts.workdir ?? '/');
    return args;
  }

  /** A RUN line in shell form, as root in `workdir` with the image writable and the host's network. */
  runLine(line: string, image: { env: Record<string, string>; workdir: string }): Promise<Ran> {
    const [cmd, ...args] = this.bwrap({ user: '0', writable: true, env: image.env, workdir: image.workdir });
    return sh(cmd, [...args, '--', '/bin/sh', '-c', line], { timeoutMs: 300_000 });
  }

  /**
   * Starts `argv` (exec form) in the image as `user`, in network namespace `netns`, as
   * PID 1 of its own pid namespace; `caps`: root's capabilities (cap_drop ALL, cap_add).
   */
  start(argv: readonly string[], opts: { netns: string; user: string; env: Record<string, string>; caps?: string[] }): SandboxRun {
    const wrap = this.bwrap({ user: opts.user, writable: false, env: opts.env });
    // As Docker's cap_drop ALL + cap_add: the bounding set holds only `caps`, so root's
    // commands get those and nothing else. setpriv execs the ENTRYPOINT in its place.
    const caps = opts.caps?.map((c) => `+${c.toLowerCase()}`).join(',');
    const drop = caps === undefined ? [] : ['setpriv', `--bounding-set=-all,${caps}`, `--inh-caps=-all,${caps}`, '--'];
    const child = spawn('ip', ['netns', 'exec', opts.netns, ...wrap, '--as-pid-1', '--info-fd', '3', '--', ...drop, ...argv], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    // bwrap writes {"child-pid": N} on fd 3 once the command's process exists.
    const info = child.stdio[3] as NodeJS.ReadableStream;
    const pid = new Promise<number>((resolve, reject) => {
      let text = '';
      info.on('data', (c: Buffer) => {
        text += c.toString();
        const m = /"child-pid":\s*(\d+)/.exec(text);
        if (m !== null) resolve(Number(m[1]));
      });
      void exited.then(() => reject(new Error(`the sandbox exited before it started:\n${out}`)));
    });
    pid.catch(() => {});
    return { child, pid, output: () => out, exited };
  }

  /** Runs `argv` to its end in the image (as `start` does) and gives its exit code and output. */
  async exec(argv: readonly string[], opts: { netns: string; user: string; env: Record<string, string>; timeoutMs?: number }): Promise<{ code: number | null; output: string }> {
    const run = this.start(argv, opts);
    const timer = setTimeout(() => run.child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    const code = await run.exited;
    clearTimeout(timer);
    return { code, output: run.output() };
  }
}
