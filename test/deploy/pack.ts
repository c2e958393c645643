// The package as `npm pack` makes it, built in a copy of the tree so that a test never
// writes dist/ into the checkout (two test files may pack at once).
//
//   const tgz = await packTandem(dir);     // dir/tandem-<version>.tgz
//   await installTarball(tgz, prefix);     // npm install <tarball> in prefix

import { execFile } from 'node:child_process';
import { cp, mkdir, readdir, symlink } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');

/** The Node the project pins, first on PATH: npm runs scripts and the `tandem` shebang with it. */
export const NODE_DIR = resolve(process.execPath, '..');
export const PATH = `${NODE_DIR}:${process.env.PATH ?? ''}`;

export interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `cmd` to its end with the pinned Node first on PATH; never rejects. */
export function sh(cmd: string, args: readonly string[], opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((done) => {
    execFile(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, PATH, ...opts.env },
      timeout: opts.timeoutMs ?? 120_000,
      maxBuffer: 16 << 20,
    }, (err, stdout, stderr) => {
      const raw = (err as { code?: unknown } | null)?.code;
      done({ code: err === null ? 0 : typeof raw === 'number' ? raw : 127, stdout, stderr });
    });
  });
}

/** Like sh, but throws with the output when the command fails. */
export async function must(cmd: string, args: readonly string[], opts: Parameters<typeof sh>[2] = {}): Promise<string> {
  const r = await sh(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** What `npm pack` reads: everything except tests, benchmarks and local state. */
const SKIP = new Set(['.git', 'node_modules', 'dist', 'test', 'bench', '.scratch']);
const defaultKeep = (path: string) => !SKIP.has(path.split('/')[0]) && !path.endsWith('.tgz');

/** Copies the checkout to `dest`, node_modules aside: the paths (relative to the checkout) that `keep` accepts. */
export async function copyTree(dest: string, keep: (path: string) => boolean): Promise<void> {
  await mkdir(dest, { recursive: true });
  for (const entry of await readdir(ROOT)) {
    if (entry === 'node_modules' || !keep(entry)) continue;
    await cp(join(ROOT, entry), join(dest, entry), { recursive: true, filter: (src) => keep(relative(ROOT, src)) });
  }
}

/** Copies the tree to `dir/src-copy`, runs `npm pack` there (prepack builds dist/) and returns the tarball's path. */
export async function packTandem(dir: string): Promise<string> {
  const copy = join(dir, 'src-copy');
  await copyTree(copy, defaultKeep);
  // The build's tsc comes from the checkout's dev dependencies.
  await symlink(join(ROOT, 'node_modules'), join(copy, 'node_modules'));
  const out = await must('npm', ['pack', '--json', '--pack-destination', dir], { cwd: copy });
  const [{ filename }] = JSON.parse(out.slice(out.indexOf('['))) as { filename: string }[];
  return join(dir, filename);
}

/** `npm install <tarball>` into a fresh project at `prefix`: the dependencies from the registry (or npm's cache). */
export async function installTarball(tgz: string, prefix: string): Promise<void> {
  await mkdir(prefix, { recursive: true });
  await must('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--no-save', tgz], { cwd: prefix, timeoutMs: 300_000 });
}
