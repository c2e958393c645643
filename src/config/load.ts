// Entry point of the config layer: YAML text in, a frozen Config or every mistake of
// the file out, each as one line `FILE:LINE:COL: key.path: what is wrong (what would
// be valid)`.

import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import type { YAMLError } from 'yaml';
import { compile } from './compile.ts';
import { Context, INVALID } from './reader.ts';
import type { Issue } from './reader.ts';
import { configSchema } from './schema.ts';
import type { Config } from './types.ts';
import { validate } from './validate.ts';

export interface LoadOptions {
  /** Variables for `${VAR}`; default: process.env. */
  env?: Record<string, string | undefined>;
  /** The node id given with `--node`; must be one of `ha.nodes` when the file has `ha`. */
  node?: string | null;
}

export type LoadResult = { ok: true; config: Config } | { ok: false; errors: string[] };

/** Reads, parses, validates and compiles a config file; never throws for bad input. */
export async function loadConfigFile(file: string, options: LoadOptions = {}): Promise<LoadResult> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    return { ok: false, errors: [`${file}: cannot read: ${readFailure(error)}`] };
  }
  return loadConfigText(text, file, options);
}

/** Same from text already read; `file` is used for messages and relative paths. */
export function loadConfigText(text: string, file: string, options: LoadOptions = {}): LoadResult {
  try {
    return load(text, file, options);
  } catch (error) {
    // A bug here must not take down a running instance on reload; say what happened.
    return { ok: false, errors: [`${file}: cannot load: ${error instanceof Error ? error.message : String(error)}`] };
  }
}

function load(text: string, file: string, options: LoadOptions): LoadResult {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, keepSourceTokens: true, prettyErrors: false, uniqueKeys: true });
  const syntax = [...doc.errors, ...doc.warnings];
  if (syntax.length > 0) {
    // The tree of a broken file is a guess; checking it would bury the real mistake
    // under follow-on complaints, so syntax errors are reported alone.
    // After one error the parser often reports every token of the line again; the
    // first error of each line is the one that says what is wrong.
    const issues = new Map<number, Issue>();
    for (const error of syntax) {
      const issue = syntaxIssue(error, lines, text);
      if (!issues.has(issue.line)) issues.set(issue.line, issue);
    }
    return { ok: false, errors: format(file, [...issues.values()]) };
  }
  const absolute = resolve(file);
  const cx = new Context(doc, lines, options.env ?? process.env, dirname(absolute));
  const root = cx.deref(doc.contents);
  if (root === null) {
    cx.fail(null, [], 'the file is empty (must be a mapping with listeners, routes and pools)');
    return { ok: false, errors: format(file, cx.issues) };
  }
  const raw = configSchema(root, [], cx);
  if (raw !== INVALID) validate(raw, cx, { node: options.node });
  if (raw === INVALID || cx.issues.length > 0) return { ok: false, errors: format(file, cx.issues) };
  return { ok: true, config: compile(raw, absolute, cx.dir) };
}

const SYNTAX_HINTS: Readonly<Record<string, string>> = {
  DUPLICATE_KEY: 'each key may appear once per mapping',
  TAB_AS_INDENT: 'indent with spaces',
  MULTIPLE_DOCS: 'a config file holds one document; remove the ---',
  TAG_RESOLVE_FAILED: 'tags such as !foo are not supported',
};

function syntaxIssue(error: YAMLError, lines: LineCounter, text: string): Issue {
  const { line, col } = lines.linePos(error.pos[0]);
  let message = error.message.replace(/\s+/g, ' ').trim();
  let hint = SYNTAX_HINTS[error.code];
  // `{ token: ${X} }`: in flow collections `{` and `}` are YAML syntax, so a plain
  // `${X}` breaks the line; this is the one syntax error users here make most.
  const lineText = text.split('\n')[line - 1] ?? '';
  const ref = lineText.indexOf('${');
  if (hint === undefined && ref !== -1 && col > ref && /[[{]/.test(lineText.slice(0, ref))) {
    hint = 'inside { } or [ ], quote values with ${...}: "${VAR}"';
  }
  if (hint !== undefined) message += ` (${hint})`;
  return { line, col, path: '(syntax)', message };
}

function format(file: string, issues: readonly Issue[]): string[] {
  return [...issues]
    .sort((a, b) => a.line - b.line || a.col - b.col)
    .map((i) => `${file}:${i.line}:${i.col}: ${i.path}: ${i.message}`);
}

function readFailure(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'is a directory';
  return error instanceof Error ? error.message : String(error);
}
