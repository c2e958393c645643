// The small machinery the schema is written in: readers that turn one YAML node into
// a typed value or record an issue at that node's line and column. Readers never
// stop at the first mistake; a bad value yields INVALID (or its default) and reading
// goes on, so one run reports every mistake of a file.

import { isAlias, isMap, isScalar, isSeq } from 'yaml';
import type { Document, LineCounter, Node, Scalar } from 'yaml';
import { expandEnv, hasReference } from './env.ts';
import type { Env } from './env.ts';
import { suggest } from './suggest.ts';

export type Path = readonly (string | number)[];

/** One mistake in a config file, located. */
export interface Issue {
  readonly line: number;
  readonly col: number;
  readonly path: string;
  readonly message: string;
}

/** Where a value came from: its node (null when absent) and key path. */
export interface Spot {
  readonly node: Node | null;
  readonly path: Path;
}

export const INVALID: unique symbol = Symbol('invalid');
export type Invalid = typeof INVALID;

/** Reads one node. `expects` says what a valid value looks like, for messages. */
export interface Reader<T> {
  (node: Node, path: Path, cx: Context): T | Invalid;
  readonly expects: string;
}

interface Place {
  readonly self: Spot;
  readonly children: Map<string | number, Spot>;
}

/** State of one read: issues found so far, positions of read values, the environment. */
export class Context {
  readonly issues: Issue[] = [];
  readonly env: Env;
  /** Directory of the config file; relative paths in it resolve here. */
  readonly dir: string;
  private readonly doc: Document;
  private readonly lines: LineCounter;
  private readonly places = new WeakMap<object, Place>();
  private readonly failedPaths = new Set<string>();

  constructor(doc: Document, lines: LineCounter, env: Env, dir: string) {
    this.doc = doc;
    this.lines = lines;
    this.env = env;
    this.dir = dir;
  }

  /**
   * Records an issue at `node` (line 1, column 1 when there is none); returns INVALID.
   * Only the first issue of a key path is kept: a value the schema rejected would
   * otherwise draw follow-on complaints from the semantic checks (an unset `${VAR}`
   * secret is also a missing secret).
   */
  fail(node: Node | null | undefined, path: Path, message: string): Invalid {
    const key = formatPath(path);
    if (this.failedPaths.has(key)) return INVALID;
    this.failedPaths.add(key);
    const offset = node?.range?.[0] ?? 0;
    const { line, col } = this.lines.linePos(offset);
    this.issues.push({ line, col, path: key, message });
    return INVALID;
  }

  /** Records an issue at a remembered spot. */
  failAt(spot: Spot, message: string): void {
    this.fail(spot.node, spot.path, message);
  }

  /** Follows an alias (`*name`) to the node it names. */
  deref(node: Node | null | undefined): Node | null {
    if (node == null) return null;
    if (isAlias(node)) return (node.resolve(this.doc) as Node | undefined) ?? null;
    return node;
  }

  /** Remembers where a read object or list and its children came from, for later checks. */
  remember(value: object, self: Spot, children: Map<string | number, Spot>): void {
    this.places.set(value, { self, children });
  }

  /** The keys a read mapping was written with, including those whose values were invalid. */
  declaredKeys(value: object): string[] {
    const place = this.places.get(value);
    if (place === undefined) return [];
    return [...place.children.keys()].filter((k): k is string => typeof k === 'string');
  }

  /** Where `value` (or its child `key`) came from; the value's own spot if the child is unknown. */
  at(value: object, key?: string | number): Spot {
    const place = this.places.get(value);
    if (place === undefined) return { node: null, path: [] };
    if (key === undefined) return place.self;
    return place.children.get(key) ?? { node: place.self.node, path: [...place.self.path, key] };
  }
}

/** `pools.web.backends[1].weight`; names that are not plain words are quoted. */
export function formatPath(path: Path): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else if (/^[A-Za-z0-9_-]+$/.test(part)) out += out === '' ? part : `.${part}`;
    else out += `[${JSON.stringify(part)}]`;
  }
  return out === '' ? '(root)' : out;
}

/** Makes a reader from a function and the description of what it accepts. */
export function reader<T>(expects: string, read: (node: Node, path: Path, cx: Context) => T | Invalid): Reader<T> {
  return Object.assign(read, { expects });
}

/** How a node looks, for the `(got ...)` part of messages. */
export function describe(node: Node | null): string {
  if (node === null) return 'nothing';
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (isScalar(node)) return describeValue(node.value);
  return 'an unsupported YAML node';
}

export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value);
  return String(value);
}

/** The value of a scalar, with `${VAR}` expanded; `expanded` tells whether anything was. */
export interface Leaf {
  readonly value: unknown;
  /** The scalar as written in the file (e.g. `1.0`, not `1`). */
  readonly source: string;
  readonly expanded: boolean;
}

/** A scalar's value after environment expansion; null when the node is no scalar. */
export function leafOf(node: Node, path: Path, cx: Context): Leaf | Invalid | null {
  if (!isScalar(node)) return null;
  const scalar = node as Scalar;
  const source = scalar.srcToken !== undefined && 'source' in scalar.srcToken ? String(scalar.srcToken.source) : String(scalar.value);
  if (typeof scalar.value !== 'string' || !hasReference(scalar.value)) {
    return { value: scalar.value, source, expanded: false };
  }
  const result = expandEnv(scalar.value, cx.env);
  if (!result.ok) return cx.fail(node, path, result.message);
  return { value: result.value, source: result.value, expanded: true };
}

function isNullScalar(node: Node | null): boolean {
  return node === null || (isScalar(node) && node.value === null);
}

// ---- leaves ------------------------------------------------------------------

/** A string; `check` returns null when fine, or a full message (what is wrong and what is valid). */
export function str(expects = 'a string', check?: (s: string) => string | null): Reader<string> {
  return reader(expects, (node, path, cx) => {
    const leaf = leafOf(node, path, cx);
    if (leaf === INVALID) return INVALID;
    if (leaf === null || typeof leaf.value !== 'string') {
      if (leaf !== null && (typeof leaf.value === 'number' || typeof leaf.value === 'boolean')) {
        return cx.fail(node, path, `must be ${expects}; quote it to make it a string (got ${leaf.source})`);
      }
      return cx.fail(node, path, `must be ${expects} (got ${describe(node)})`);
    }
    const problem = check?.(leaf.value) ?? null;
    if (problem !== null) return cx.fail(node, path, problem);
    return leaf.value;
  });
}

/** A string converted by `parse`, which returns the value or a full message. */
export function parsed<T>(expects: string, parse: (s: string) => { value: T } | string, onNumber?: (source: string) => string): Reader<T> {
  return reader(expects, (node, path, cx) => {
    const leaf = leafOf(node, path, cx);
    if (leaf === INVALID) return INVALID;
    if (leaf === null || typeof leaf.value !== 'string') {
      if (leaf !== null && typeof leaf.value === 'number' && onNumber !== undefined) {
        return cx.fail(node, path, onNumber(leaf.source));
      }
      return cx.fail(node, path, `must be ${expects} (got ${leaf === null ? describe(node) : leaf.source})`);
    }
    const result = parse(leaf.value.trim());
    if (typeof result === 'string') return cx.fail(node, path, result);
    return result.value;
  });
}

/** Any scalar, as the text written (numbers and booleans keep their spelling). */
export function scalarText(expects: string): Reader<string> {
  return reader(expects, (node, path, cx) => {
    const leaf = leafOf(node, path, cx);
    if (leaf === INVALID) return INVALID;
    if (leaf === null || leaf.value === null) return cx.fail(node, path, `must be ${expects} (got ${describe(node)})`);
    return typeof leaf.value === 'string' ? leaf.value : leaf.source;
  });
}

/** An integer from `min` to `max`. */
export function int(min: number, max: number, expects = `an integer from ${min} to ${max}`): Reader<number> {
  return reader(expects, (node, path, cx) => {
    const leaf = leafOf(node, path, cx);
    if (leaf === INVALID) return INVALID;
    let value = leaf?.value;
    // A value from the environment arrives as text; it is a number if it reads as one.
    if (leaf !== null && leaf.expanded && typeof value === 'string' && /^\s*[+-]?\d+\s*$/.test(value)) value = Number(value);
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      const got = leaf === null ? describe(node) : leaf.expanded || typeof value === 'string' ? describeValue(value) : leaf.source;
      return cx.fail(node, path, `must be ${expects} (got ${got})`);
    }
    return value;
  });
}

/** true or false. */
export function bool(): Reader<boolean> {
  return reader('true or false', (node, path, cx) => {
    const leaf = leafOf(node, path, cx);
    if (leaf === INVALID) return INVALID;
    let value = leaf?.value;
    if (leaf !== null && leaf.expanded && typeof value === 'string') {
      if (value.trim() === 'true') value = true;
      else if (value.trim() === 'false') value = false;
    }
    if (typeof value !== 'boolean') return cx.fail(node, path, `must be true or false (got ${leaf === null ? describe(node) : describeValue(value)})`);
    return value;
  });
}

/** One of a fixed set of words, with a suggestion for near misses. */
export function oneOf<const W extends string>(words: readonly W[]): Reader<W> {
  const expects = `one of ${words.join(', ')}`;
  return reader(expects, (node, path, cx) => {
    const leaf = leafOf(node, path, cx);
    if (leaf === INVALID) return INVALID;
    const value = leaf?.value;
    if (typeof value === 'string' && (words as readonly string[]).includes(value)) return value as W;
    const near = typeof value === 'string' ? suggest(value, words) : null;
    const got = leaf === null ? describe(node) : describeValue(value);
    return cx.fail(node, path, `must be ${expects} (got ${got}${near === null ? '' : `; did you mean ${near}?`})`);
  });
}

// ---- structures --------------------------------------------------------------

/** A key of a mapping: required, defaulted or optional (null when absent). */
export interface Field<T> {
  readonly read: Reader<unknown>;
  readonly mode: 'required' | 'default' | 'optional';
  readonly fallback: unknown;
  /** Carries T for type inference only. */
  readonly type?: T;
}

/** A key that must be present; its value is undefined when it is missing or invalid. */
export function required<T>(read: Reader<T>): Field<T | undefined> {
  return { read, mode: 'required', fallback: undefined };
}

/** A key with a default, used when it is absent, null, or invalid (the issue is still reported). */
export function withDefault<T>(read: Reader<T>, fallback: T): Field<T> {
  return { read, mode: 'default', fallback };
}

/** A key that may be absent (or null); then its value is null. */
export function optional<T>(read: Reader<T>): Field<T | null> {
  return { read, mode: 'optional', fallback: null };
}

type Fields = Record<string, Field<unknown>>;
export type StructOf<F extends Fields> = { [K in keyof F]: F[K] extends Field<infer T> ? T : never };

/** A mapping with exactly the keys in `fields`; unknown keys are issues. */
export function struct<F extends Fields>(fields: F, expects = 'a mapping'): Reader<StructOf<F>> {
  const names = Object.keys(fields);
  return reader(expects, (node, path, cx) => {
    if (!isMap(node)) return cx.fail(node, path, `must be ${expects} (got ${describe(node)})`);
    const given = new Map<string, Node | null>();
    for (const pair of node.items) {
      const keyNode = pair.key as Node | null;
      const key = isScalar(keyNode) && (typeof keyNode.value === 'string' || typeof keyNode.value === 'number') ? String(keyNode.value) : null;
      if (key === null) {
        cx.fail(keyNode ?? node, path, `keys must be plain words (got ${describe(keyNode)})`);
        continue;
      }
      if (!Object.hasOwn(fields, key)) {
        const near = suggest(key, names);
        const hint = near !== null ? `did you mean ${near}?` : `valid keys: ${names.join(', ')}`;
        cx.fail(keyNode, [...path, key], `unknown key (${hint})`);
        continue;
      }
      given.set(key, cx.deref(pair.value as Node | null));
    }
    const out: Record<string, unknown> = {};
    const children = new Map<string | number, Spot>();
    for (const name of names) {
      const field = fields[name];
      const at = [...path, name];
      const present = given.has(name);
      const value = given.get(name) ?? null;
      children.set(name, { node: value ?? node, path: at });
      if (isNullScalar(value)) {
        if (field.mode === 'required') {
          if (present) cx.fail(value, at, `is empty (must be ${field.read.expects})`);
          else cx.fail(node, at, `is missing (must be ${field.read.expects})`);
        }
        out[name] = field.fallback;
        continue;
      }
      const result = field.read(value as Node, at, cx);
      out[name] = result === INVALID ? field.fallback : result;
    }
    cx.remember(out, { node, path }, children);
    return out as StructOf<F>;
  });
}

/** A list of items; items that are not even the right kind of node are left out. */
export function list<T>(item: Reader<T>, options: { min?: number; expects?: string } = {}): Reader<T[]> {
  const min = options.min ?? 0;
  const expects = options.expects ?? `a list, each ${item.expects}`;
  return reader(expects, (node, path, cx) => {
    if (!isSeq(node)) return cx.fail(node, path, `must be ${expects} (got ${describe(node)})`);
    return readItems(node.items as (Node | null)[], item, node, path, cx, min, expects);
  });
}

/** One item or a list of them (`host: a.example.com` or `host: [a, b]`). */
export function oneOrList<T>(item: Reader<T>): Reader<T[]> {
  const expects = `${item.expects}, or a list of them`;
  return reader(expects, (node, path, cx) => {
    if (isSeq(node)) return readItems(node.items as (Node | null)[], item, node, path, cx, 0, expects);
    const one = item(node, path, cx);
    if (one === INVALID) return INVALID;
    const out = [one];
    cx.remember(out, { node, path }, new Map([[0, { node, path }]]));
    return out;
  });
}

function readItems<T>(items: (Node | null)[], item: Reader<T>, node: Node, path: Path, cx: Context, min: number, expects: string): T[] {
  const out: T[] = [];
  const children = new Map<string | number, Spot>();
  items.forEach((raw, index) => {
    const child = cx.deref(raw);
    const at = [...path, index];
    if (isNullScalar(child)) {
      cx.fail(child ?? node, at, `is empty (must be ${item.expects})`);
      return;
    }
    const value = item(child as Node, at, cx);
    if (value === INVALID) return;
    children.set(out.length, { node: child, path: at });
    out.push(value);
  });
  if (items.length < min) {
    cx.fail(node, path, `must have at least ${min} ${min === 1 ? 'entry' : 'entries'} (${expects})`);
  }
  cx.remember(out, { node, path }, children);
  return out;
}

/**
 * A mapping from names to values (`pools: { web: {...} }`). The spot remembered for
 * each name is its key, where mistakes about the name itself are reported.
 */
export function dict<T>(value: Reader<T>, options: { min?: number; key: Reader<string>; expects: string }): Reader<Map<string, T>> {
  const min = options.min ?? 0;
  return reader(options.expects, (node, path, cx) => {
    if (!isMap(node)) return cx.fail(node, path, `must be ${options.expects} (got ${describe(node)})`);
    const out = new Map<string, T>();
    const children = new Map<string | number, Spot>();
    for (const pair of node.items) {
      const keyNode = pair.key as Node | null;
      const rawKey = isScalar(keyNode) ? keyNode.value : null;
      const keyPath = [...path, rawKey === null || rawKey === undefined ? '?' : String(rawKey)];
      if (keyNode === null) {
        cx.fail(node, keyPath, `keys must be names (got nothing)`);
        continue;
      }
      const key = options.key(keyNode, keyPath, cx);
      if (key === INVALID) continue;
      const child = cx.deref(pair.value as Node | null);
      const at = [...path, key];
      children.set(key, { node: keyNode, path: at });
      if (isNullScalar(child)) {
        cx.fail(child ?? keyNode, at, `is empty (must be ${value.expects})`);
        continue;
      }
      const result = value(child as Node, at, cx);
      if (result !== INVALID) out.set(key, result);
    }
    if (node.items.length < min) cx.fail(node, path, `must have at least ${min} ${min === 1 ? 'entry' : 'entries'} (${options.expects})`);
    cx.remember(out, { node, path }, children);
    return out;
  });
}

/** Chooses a reader by the node's shape (`admin: false` or `admin: {...}`); null: none fits. */
export function either<T>(expects: string, choose: (node: Node, leaf: unknown) => Reader<T> | null): Reader<T> {
  return reader(expects, (node, path, cx) => {
    let leaf: unknown = undefined;
    if (isScalar(node)) {
      const l = leafOf(node, path, cx);
      if (l === INVALID) return INVALID;
      leaf = l === null ? undefined : l.value;
    }
    const chosen = choose(node, leaf);
    if (chosen === null) return cx.fail(node, path, `must be ${expects} (got ${isScalar(node) ? describeValue(leaf) : describe(node)})`);
    return chosen(node, path, cx);
  });
}
