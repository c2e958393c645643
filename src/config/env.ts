// `${VAR}` and `${VAR:-default}` inside scalar values. Expansion happens on the parsed
// scalars, not on the file text, so every position the user sees stays the one in
// the file, and a value from the environment can never inject YAML structure.

export type Env = Readonly<Record<string, string | undefined>>;

export type Expanded = { readonly ok: true; readonly value: string } | { readonly ok: false; readonly message: string };

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** True when the text has anything to expand (`${`, which also covers the `$${` escape). */
export function hasReference(text: string): boolean {
  return text.includes('${');
}

/**
 * Replaces `${VAR}` and `${VAR:-default}` from `env`; `$${` is a literal `${`. As in
 * the shell, `:-` also applies when the variable is set but empty.
 */
export function expandEnv(text: string, env: Env): Expanded {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const dollar = text.indexOf('$', i);
    if (dollar === -1) {
      out += text.slice(i);
      break;
    }
    out += text.slice(i, dollar);
    if (text.startsWith('$${', dollar)) {
      out += '${';
      i = dollar + 3;
      continue;
    }
    if (text[dollar + 1] !== '{') {
      out += '$';
      i = dollar + 1;
      continue;
    }
    const close = text.indexOf('}', dollar + 2);
    if (close === -1) {
      return { ok: false, message: '"${" has no closing "}" (write ${NAME} or ${NAME:-default}, or $${ for a literal "${")' };
    }
    const inner = text.slice(dollar + 2, close);
    const sep = inner.indexOf(':-');
    const name = sep === -1 ? inner : inner.slice(0, sep);
    if (!NAME.test(name)) {
      return {
        ok: false,
        message: `"\${${inner}}" is not a variable reference (write \${NAME} or \${NAME:-default} with NAME of letters, digits and _)`,
      };
    }
    const value = env[name];
    if (sep !== -1) {
      out += value === undefined || value === '' ? inner.slice(sep + 2) : value;
    } else if (value === undefined) {
      return { ok: false, message: `environment variable ${name} is not set (set it, or write \${${name}:-default})` };
    } else {
      out += value;
    }
    i = close + 1;
  }
  return { ok: true, value: out };
}
