// The one catalogue of tandem's errors. Codes are stable: operators grep logs and
// dashboards for them, and clients see them in the bodies tandem answers itself.
// docs/errors.md documents every code; test/errors.test.ts keeps the two in step.

export interface ErrorSpec {
  readonly code: string;
  /** HTTP status where the error reaches a client; 0 where it never does. */
  readonly status: number;
  readonly message: string;
}

function spec(code: string, status: number, message: string): ErrorSpec {
  return Object.freeze({ code, status, message });
}

export const errors = Object.freeze({
  // Data plane: answers tandem gives clients itself.
  NO_ROUTE: spec('TANDEM_ERR_NO_ROUTE', 404, 'no route matches this request'),
  BAD_REQUEST: spec('TANDEM_ERR_BAD_REQUEST', 400, 'malformed request'),
  DUPLICATE_HEADER: spec('TANDEM_ERR_DUPLICATE_HEADER', 400, 'a header field that may appear once appears more than once'),
  MISSING_HOST: spec('TANDEM_ERR_MISSING_HOST', 400, 'an HTTP/1.1 request needs a Host header'),
  METHOD_NOT_IMPLEMENTED: spec('TANDEM_ERR_METHOD_NOT_IMPLEMENTED', 501, 'request method not supported'),
  HEADERS_TOO_LARGE: spec('TANDEM_ERR_HEADERS_TOO_LARGE', 431, 'request header fields too large'),
  REQUEST_TIMEOUT: spec('TANDEM_ERR_REQUEST_TIMEOUT', 408, 'the client did not send the request in time'),
  BACKEND_UNREACHABLE: spec('TANDEM_ERR_BACKEND_UNREACHABLE', 502, 'backend unreachable'),
  BACKEND_INVALID_RESPONSE: spec('TANDEM_ERR_BACKEND_INVALID_RESPONSE', 502, 'backend sent an invalid response'),
  BACKEND_RESET: spec('TANDEM_ERR_BACKEND_RESET', 502, 'backend closed the connection before answering'),
  NO_BACKEND: spec('TANDEM_ERR_NO_BACKEND', 503, 'no available backend'),
  QUEUE_FULL: spec('TANDEM_ERR_QUEUE_FULL', 503, 'every backend is at its connection limit and the queue is full'),
  QUEUE_TIMEOUT: spec('TANDEM_ERR_QUEUE_TIMEOUT', 503, 'no backend had room within the queue timeout'),
  RATE_LIMITED: spec('TANDEM_ERR_RATE_LIMITED', 429, 'too many requests from this client address'),
  LISTENER_REMOVED: spec('TANDEM_ERR_LISTENER_REMOVED', 503, 'this listener was removed by a reload; reconnect'),
  CONNECT_TIMEOUT: spec('TANDEM_ERR_CONNECT_TIMEOUT', 504, 'timed out connecting to the backend'),
  RESPONSE_TIMEOUT: spec('TANDEM_ERR_RESPONSE_TIMEOUT', 504, 'backend did not answer in time'),
  FORBIDDEN: spec('TANDEM_ERR_FORBIDDEN', 403, 'this route does not allow the client address'),
  UPGRADE_FAILED: spec('TANDEM_ERR_UPGRADE_FAILED', 502, 'backend refused the protocol upgrade'),

  // Config and arguments: exit code 1.
  CONFIG_INVALID: spec('TANDEM_ERR_CONFIG_INVALID', 0, 'invalid configuration'),
  CONFIG_READ: spec('TANDEM_ERR_CONFIG_READ', 0, 'configuration file cannot be read'),
  ARGUMENTS: spec('TANDEM_ERR_ARGUMENTS', 0, 'invalid command-line arguments'),

  // Runtime failures: exit code 2.
  LISTEN: spec('TANDEM_ERR_LISTEN', 0, 'cannot bind a listener address'),
  ADMIN_UNAUTHORIZED: spec('TANDEM_ERR_ADMIN_UNAUTHORIZED', 401, 'missing or wrong bearer token'),
  ADMIN_FORBIDDEN: spec('TANDEM_ERR_ADMIN_FORBIDDEN', 403, 'without the token, only same-origin JSON requests to the admin address are served'),
  ADMIN_RATE_LIMITED: spec('TANDEM_ERR_ADMIN_RATE_LIMITED', 429, 'too many wrong tokens from this address'),
  ADMIN_NOT_FOUND: spec('TANDEM_ERR_ADMIN_NOT_FOUND', 404, 'no such pool, backend or VIP'),
  ADMIN_BAD_REQUEST: spec('TANDEM_ERR_ADMIN_BAD_REQUEST', 400, 'the request body is not what this call takes'),
  ADMIN_METHOD_NOT_ALLOWED: spec('TANDEM_ERR_ADMIN_METHOD_NOT_ALLOWED', 405, 'this path does not take this method'),
  ADMIN_BODY_TOO_LARGE: spec('TANDEM_ERR_ADMIN_BODY_TOO_LARGE', 413, 'the request body is too large'),
  ADMIN_UNSUPPORTED_MEDIA_TYPE: spec('TANDEM_ERR_ADMIN_UNSUPPORTED_MEDIA_TYPE', 415, 'the admin API takes request bodies as application/json only'),
  ADMIN_INTERNAL: spec('TANDEM_ERR_ADMIN_INTERNAL', 500, 'the admin API failed to answer'),
  ADMIN_SHUTTING_DOWN: spec('TANDEM_ERR_ADMIN_SHUTTING_DOWN', 503, 'the admin API is shutting down or moving to another address'),
  ADMIN_UNREACHABLE: spec('TANDEM_ERR_ADMIN_UNREACHABLE', 0, 'the admin API cannot be reached'),
  RELOAD_FAILED: spec('TANDEM_ERR_RELOAD_FAILED', 400, 'reload rejected; the running config is kept'),
  HOOK_FAILED: spec('TANDEM_ERR_HOOK_FAILED', 0, 'the VIP hook failed'),
  LEASE_STORE: spec('TANDEM_ERR_LEASE_STORE', 0, 'the lease store failed'),
} as const);

export type ErrorName = keyof typeof errors;

/** An error from the catalogue, with a stable `code` and, where it reaches a client, a `status`. */
export class TandemError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(which: ErrorSpec, detail?: string, options?: { cause?: unknown }) {
    super(detail ? `${which.message}: ${detail}` : which.message, options);
    this.name = 'TandemError';
    this.code = which.code;
    this.status = which.status;
  }
}
