// The admin API answers its errors in the one shape of tandem's own answers (see
// docs/errors.md): `{ "error": CODE, "message": TEXT }` with the status of CODE in the
// catalogue of src/errors.ts. Errors fastify raises itself (FST_ codes: a body that is
// not JSON, a content type it cannot parse, a body too large...) are mapped into the
// catalogue here, and a wrong method on a known path gets 405 with Allow (fastify
// would answer 404).

import { errors, TandemError, type ErrorSpec } from '../errors.ts';

/** fastify's error codes and the catalogue entry each one becomes. */
const FASTIFY_CODES: Readonly<Record<string, ErrorSpec>> = {
  FST_ERR_CTP_INVALID_JSON_BODY: errors.ADMIN_BAD_REQUEST,
  FST_ERR_CTP_EMPTY_JSON_BODY: errors.ADMIN_BAD_REQUEST,
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: errors.ADMIN_BAD_REQUEST,
  FST_ERR_CTP_EMPTY_TYPE: errors.ADMIN_UNSUPPORTED_MEDIA_TYPE,
  FST_ERR_CTP_INVALID_TYPE: errors.ADMIN_UNSUPPORTED_MEDIA_TYPE,
  FST_ERR_CTP_INVALID_MEDIA_TYPE: errors.ADMIN_UNSUPPORTED_MEDIA_TYPE,
  FST_ERR_CTP_BODY_TOO_LARGE: errors.ADMIN_BODY_TOO_LARGE,
  FST_ERR_VALIDATION: errors.ADMIN_BAD_REQUEST,
  FST_ERR_BAD_URL: errors.ADMIN_BAD_REQUEST,
  FST_ERR_NOT_FOUND: errors.ADMIN_NOT_FOUND,
};

/** The catalogue entry for an error thrown while answering, and the detail to add to its message. */
export function fastifyError(err: Error & { code?: string; statusCode?: number }): { spec: ErrorSpec; detail: string | undefined } {
  if (err instanceof TandemError) {
    const spec = Object.values(errors).find((s) => s.code === err.code && s.status > 0) ?? errors.ADMIN_INTERNAL;
    // The TandemError's message already starts with the catalogue's text.
    const prefix = `${spec.message}: `;
    return { spec, detail: err.message.startsWith(prefix) ? err.message.slice(prefix.length) : spec === errors.ADMIN_INTERNAL ? err.message : undefined };
  }
  const mapped = err.code === undefined ? undefined : FASTIFY_CODES[err.code];
  if (mapped !== undefined) return { spec: mapped, detail: err.message };
  const status = typeof err.statusCode === 'number' ? err.statusCode : 500;
  if (status === 404) return { spec: errors.ADMIN_NOT_FOUND, detail: err.message };
  if (status === 413) return { spec: errors.ADMIN_BODY_TOO_LARGE, detail: err.message };
  if (status === 415) return { spec: errors.ADMIN_UNSUPPORTED_MEDIA_TYPE, detail: err.message };
  if (status >= 400 && status < 500) return { spec: errors.ADMIN_BAD_REQUEST, detail: err.message };
  return { spec: errors.ADMIN_INTERNAL, detail: err.message };
}

/** Methods by route pattern, to tell a wrong method (405) from an unknown path (404). */
export class MethodTable {
  private readonly routes: { readonly pattern: RegExp; readonly methods: Set<string> }[] = [];

  add(method: string | string[], url: string): void {
    // Routes here use only `:name` segments (no regular expressions, no wildcards).
    const source = '^' + url.split('/').map((seg) => (seg.startsWith(':') ? '[^/]+' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/') + '$';
    let entry = this.routes.find((r) => r.pattern.source === source);
    if (entry === undefined) {
      entry = { pattern: new RegExp(source), methods: new Set() };
      this.routes.push(entry);
    }
    for (const m of Array.isArray(method) ? method : [method]) entry.methods.add(m.toUpperCase());
  }

  /** Methods a path takes, sorted; empty for a path no route has. */
  allowed(path: string): string[] {
    const out = new Set<string>();
    for (const r of this.routes) if (r.pattern.test(path)) for (const m of r.methods) out.add(m);
    return [...out].sort();
  }
}
