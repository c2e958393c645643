// GET /status: the live status page. Three static files, read once at startup; the
// page itself fetches /api/v1/status and follows /api/v1/events.

import { readFile } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';

export interface StatusPageAssets {
  readonly html: string;
  readonly css: string;
  readonly js: string;
}

const dir = new URL('../status-page/', import.meta.url);

/** Reads the page's files; done once by startAdmin. */
export async function loadStatusPage(): Promise<StatusPageAssets> {
  const [html, css, js] = await Promise.all(
    ['index.html', 'style.css', 'app.js'].map((f) => readFile(new URL(f, dir), 'utf8')),
  );
  return { html, css, js };
}

// No inline script or style and nothing from elsewhere: the page runs on the admin
// port, next to the bearer token, and should not be able to load anything else.
const CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/** Paths anyone may read even when reads need the token: the page carries no data itself. */
export const STATUS_PAGE_PATHS: readonly string[] = ['/', '/status', '/status/style.css', '/status/app.js'];

export function statusPageRoutes(app: FastifyInstance, assets: StatusPageAssets): void {
  app.get('/', async (_req, reply) => reply.redirect('/status'));
  app.get('/status', async (_req, reply) =>
    reply.header('content-type', 'text/html; charset=utf-8').header('content-security-policy', CSP)
      .header('cache-control', 'no-cache').send(assets.html));
  app.get('/status/style.css', async (_req, reply) =>
    reply.header('content-type', 'text/css; charset=utf-8').header('cache-control', 'no-cache').send(assets.css));
  app.get('/status/app.js', async (_req, reply) =>
    reply.header('content-type', 'text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(assets.js));
}
