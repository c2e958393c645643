// Request smuggling and ambiguous requests, sent as raw bytes. For each shape: the status
// tandem answers, whether it closes the connection, and exactly what reached the
// backend (nothing, for every request that is refused).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { singlePool } from '../helpers/config.ts';
import { startTandem, type TandemProcess } from '../helpers/tandem.ts';
import { exchange, RecordingBackend } from './support.ts';

let backend: RecordingBackend;
let t: TandemProcess;
let address: string;

before(async () => {
  backend = await RecordingBackend.start();
  t = await startTandem(singlePool([{ name: 'rec', url: backend.url }]));
  address = [...t.listeners.values()][0];
});
after(async () => {
  await t?.stop();
  await backend?.close();
});

/** The head tandem sends upstream for a body-less request from 127.0.0.1 (`<id>`: the X-Request-Id it made). */
function forwarded(method: string, path: string, host: string, extra = ''): string {
  return `${method} ${path} HTTP/1.1\r\nhost: ${host}\r\nconnection: keep-alive\r\n${extra}x-forwarded-for: 127.0.0.1\r\n`
    + `x-forwarded-proto: http\r\n${host === '' ? '' : `x-forwarded-host: ${host}\r\n`}via: 1.1 tandem\r\nx-request-id: <id>\r\n\r\n`;
}

/** What reached the backend, each request id tandem made (a random UUID) written `<id>`. */
function upstream(): string {
  return backend.bytes().replace(/\r\nx-request-id: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\r\n/g, '\r\nx-request-id: <id>\r\n');
}

interface Refused { name: string; bytes: string; status: number; code: string }

// Every one of these must be answered with `status`, the connection closed, and nothing
// (not even a partial head) sent to the backend.
const refused: Refused[] = [
  // RFC 9112 §6.3: both framings present is a smuggling attempt, not a choice to make.
  { name: 'Content-Length with Transfer-Encoding (CL.TE)', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n' },
  { name: 'Transfer-Encoding with Content-Length (TE.CL)', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n' },
  { name: 'two equal Content-Length headers', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc' },
  { name: 'two different Content-Length headers', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabcGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n' },
  { name: 'a Content-Length list', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc' },
  { name: 'a signed Content-Length', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc' },
  { name: 'a hexadecimal Content-Length', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc' },
  { name: 'Transfer-Encoding with a space before the colon', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' },
  { name: 'Transfer-Encoding that is not chunked (xchunked)', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' },
  { name: 'Transfer-Encoding with chunked not last', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n' },
  { name: 'Transfer-Encoding folded over two lines', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' },
  { name: 'Transfer-Encoding with a vertical tab', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \x0bchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' },
  { name: 'a chunk size that is not hexadecimal', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n' },
  { name: 'a chunk size that overflows 64 bits', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nabc\r\n0\r\n\r\n' },
  { name: 'a chunk extension with a control character', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;\x01\r\nabc\r\n0\r\n\r\n' },
  { name: 'chunk data longer than its size', status: 400, code: 'BAD_REQUEST',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n' },
  { name: 'a bare LF line ending', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.1\nHost: a\n\n' },
  { name: 'a bare LF inside the head', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n' },
  { name: 'a bare CR inside the head', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n' },
  { name: 'an obs-fold continuation line', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n' },
  { name: 'whitespace before the first header', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.1\r\n Host: a\r\n\r\n' },
  { name: 'a space inside a header name', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\n' },
  { name: 'a header name with a non-token character', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n' },
  { name: 'an empty header name', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.1\r\nHost: a\r\n: b\r\n\r\n' },
  { name: 'a NUL in a header value', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n' },
  { name: 'a CR in a header value', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n' },
  { name: 'a CR in the request target', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x\rHost: b HTTP/1.1\r\nHost: a\r\n\r\n' },
  { name: 'a space in the request target', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x /y HTTP/1.1\r\nHost: a\r\n\r\n' },
  { name: 'an unknown HTTP version', status: 400, code: 'BAD_REQUEST', bytes: 'GET /x HTTP/1.7\r\nHost: a\r\n\r\n' },
  { name: 'HTTP/0.9 followed by a blank line', status: 400, code: 'BAD_REQUEST', bytes: 'GET /\r\n\r\n' },
  { name: 'a method node:http does not know', status: 501, code: 'METHOD_NOT_IMPLEMENTED', bytes: 'FROB /x HTTP/1.1\r\nHost: a\r\n\r\n' },
  { name: 'a line that is no request line', status: 400, code: 'BAD_REQUEST', bytes: 'GARBAGE\r\n\r\n' },
  { name: 'a request line with a lower-case method', status: 501, code: 'METHOD_NOT_IMPLEMENTED', bytes: 'get /x HTTP/1.1\r\nHost: a\r\n\r\n' },
  // Case 1 of the hardening issue: node:http routes on the first Host; the backend saw the last.
  { name: 'two Host headers', status: 400, code: 'DUPLICATE_HEADER',
    bytes: 'GET /pub/x HTTP/1.1\r\nHost: public.test\r\nHost: internal.test\r\n\r\n' },
  { name: 'two Host headers of different case', status: 400, code: 'DUPLICATE_HEADER',
    bytes: 'GET /pub/x HTTP/1.1\r\nhost: public.test\r\nHOST: internal.test\r\n\r\n' },
  { name: 'two Authorization headers', status: 400, code: 'DUPLICATE_HEADER',
    bytes: 'GET /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n' },
  { name: 'two Content-Type headers', status: 400, code: 'DUPLICATE_HEADER',
    bytes: 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}' },
  { name: 'an HTTP/1.1 request without Host', status: 400, code: 'MISSING_HOST', bytes: 'GET /x HTTP/1.1\r\n\r\n' },
  { name: 'an absolute-form target with user info', status: 400, code: 'BAD_REQUEST', bytes: 'GET http://user@other.test/a HTTP/1.1\r\nHost: a\r\n\r\n' },
  { name: 'an authority-form target outside CONNECT', status: 400, code: 'BAD_REQUEST', bytes: 'GET other.test:80 HTTP/1.1\r\nHost: a\r\n\r\n' },
];

describe('refused requests: an error status, the connection closed, nothing forwarded', () => {
  for (const c of refused) {
    test(c.name, async () => {
      backend.reset();
      const r = await exchange(address, c.bytes);
      assert.deepEqual(r.statuses, [c.status], r.text);
      assert.ok(r.closed, 'the connection is closed');
      assert.match(r.text, new RegExp(`"error":"TANDEM_ERR_${c.code}"`));
      assert.match(r.text, /\r\nconnection: close\r\n/i);
      // A request that reached the backend would have opened a connection to it by now
      // (the same connection pool serves the passing cases below).
      assert.equal(backend.bytes(), '', 'nothing reaches the backend');
      assert.equal(backend.requests.length, 0);
    });
  }
});

test('a request pipelined after an invalid one is never parsed or forwarded', async () => {
  backend.reset();
  const r = await exchange(address, 'GET /x HTTP/1.1\r\nHost: a\r\nX A: b\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n');
  assert.deepEqual(r.statuses, [400]);
  assert.ok(r.closed);
  assert.equal(backend.bytes(), '');
});

test('a request pipelined after a smuggling attempt is not forwarded', async () => {
  backend.reset();
  const r = await exchange(address, [
    'GET /first HTTP/1.1\r\nHost: a\r\n\r\n',
    'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n',
  ].join(''), { until: (text) => text.includes('TANDEM_ERR_BAD_REQUEST') });
  assert.deepEqual(r.statuses, [200, 400]);
  assert.equal(upstream(), forwarded('GET', '/first', 'a'));
});

test('a bad chunk after a good one: 400, and no complete request reaches the backend', async () => {
  backend.reset();
  const r = await exchange(address, ['POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n', 'zz\r\nabc\r\n0\r\n\r\n'], { gapMs: 200 });
  assert.deepEqual(r.statuses, [400], r.text);
  assert.ok(r.closed);
  // The head and the first chunk may have gone up; the upstream exchange was cut, so
  // the backend never saw the request end.
  assert.equal(backend.requests.length, 0);
  assert.doesNotMatch(backend.bytes(), /0\r\n\r\n$/);
});

interface Passed { name: string; bytes: string; statuses: number[]; reaches: string; last: string }

// Valid shapes that must reach the backend, and exactly as this.
const passed: Passed[] = [
  { name: 'an absolute-form target is routed on its authority and forwarded in origin form', last: 'GET /a?b=1', statuses: [200],
    bytes: 'GET http://other.test/a?b=1 HTTP/1.1\r\nHost: ignored.test\r\n\r\n', reaches: forwarded('GET', '/a?b=1', 'other.test') },
  { name: 'an absolute-form target without a path gets /', last: 'GET /', statuses: [200],
    bytes: 'GET http://other.test HTTP/1.1\r\n\r\n', reaches: forwarded('GET', '/', 'other.test') },
  { name: 'HTTP/1.0 without Host is forwarded with an empty Host, never the backend\'s own address', last: 'GET /old', statuses: [200],
    bytes: 'GET /old HTTP/1.0\r\n\r\n', reaches: forwarded('GET', '/old', '').replace('via: 1.1', 'via: 1.0') },
  { name: 'OPTIONS * is answered 200 by tandem for a routed host', last: 'GET /next', statuses: [200, 200],
    bytes: 'OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n', reaches: forwarded('GET', '/next', 'a') },
  { name: 'Upgrade: h2c is answered over HTTP/1.1, the upgrade headers dropped', last: 'GET /x', statuses: [200],
    bytes: 'GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
    reaches: forwarded('GET', '/x', 'a') },
  { name: 'an unknown upgrade (TLS/1.0) is served as a plain request too', last: 'GET /x', statuses: [200],
    bytes: 'GET /x HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: TLS/1.0\r\n\r\n', reaches: forwarded('GET', '/x', 'a') },
  { name: 'repeated list-valued headers pass in order', last: 'GET /x', statuses: [200],
    bytes: 'GET /x HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\nAccept: */*\r\n\r\n', reaches: forwarded('GET', '/x', 'a', 'Accept: text/html\r\nAccept: */*\r\n') },
];

describe('accepted shapes reach the backend in one normal form', () => {
  for (const c of passed) {
    test(c.name, async () => {
      backend.reset();
      const r = await exchange(address, c.bytes, { until: (s) => s.endsWith(c.last) });
      assert.deepEqual(r.statuses, c.statuses, r.text);
      assert.match(r.text, /^HTTP\/1\.1 200 OK\r\n/);
      assert.equal(upstream(), c.reaches);
    });
  }

  test('a valid chunked body is forwarded once, re-framed by tandem', async () => {
    backend.reset();
    const r = await exchange(address, 'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n', { until: (s) => s.endsWith('POST /c') });
    assert.deepEqual(r.statuses, [200]);
    assert.equal(backend.requests.length, 1);
    assert.equal(backend.requests[0].body, 'abc');
    const h = backend.requests[0].headers;
    assert.ok(!(h['transfer-encoding'] !== undefined && h['content-length'] !== undefined), 'one framing only');
  });
});
