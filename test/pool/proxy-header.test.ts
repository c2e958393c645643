import { test } from 'node:test';
import assert from 'node:assert/strict';
import { localProxyHeader, proxyHeader } from '../../src/pool/proxy-header.ts';
import { parseProxyHeader } from '../../src/dataplane/proxy-protocol.ts';

// The headers tandem writes to backends, byte for byte as proxy-protocol.txt lays them
// out, and read back by tandem's own listener-side reader.

const SIG = '0d0a0d0a000d0a515549540a';

test('v1: TCP4 and TCP6 lines; an IPv4 peer of a dual-stack socket is written as IPv4', () => {
  assert.equal(proxyHeader('v1', { address: '::ffff:192.0.2.1', port: 51000 }, { address: '198.51.100.2', port: 443 }).toString(),
    'PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\n');
  assert.equal(proxyHeader('v1', { address: '2001:db8::1', port: 1 }, { address: '2001:db8::2', port: 2 }).toString(),
    'PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n');
});

test('mixed families: the IPv4 side is written IPv4-mapped, as HAProxy does', () => {
  assert.equal(proxyHeader('v1', { address: '2001:db8::1', port: 1 }, { address: '192.0.2.9', port: 80 }).toString(),
    'PROXY TCP6 2001:db8::1 ::ffff:192.0.2.9 1 80\r\n');
  const v2 = proxyHeader('v2', { address: '2001:db8::1', port: 1 }, { address: '192.0.2.9', port: 80 });
  assert.equal(v2.toString('hex', 12, 16), '21210024');
  assert.equal(v2.toString('hex', 32, 48), '00000000000000000000ffffc0000209');
});

test('v2: PROXY over TCP4 and TCP6, byte for byte', () => {
  const four = proxyHeader('v2', { address: '192.0.2.1', port: 51000 }, { address: '198.51.100.2', port: 443 });
  assert.equal(four.toString('hex'), `${SIG}2111000c` + 'c0000201' + 'c6336402' + 'c738' + '01bb');
  const six = proxyHeader('v2', { address: '2001:db8::1', port: 8 }, { address: '::1', port: 9 });
  assert.equal(six.toString('hex'), `${SIG}21210024` + '20010db8000000000000000000000001' + '00000000000000000000000000000001' + '0008' + '0009');
  for (const h of [four, six]) assert.equal(parseProxyHeader(h).state, 'done');
  assert.deepEqual(parseProxyHeader(six), { state: 'done', length: 52, peer: { address: '2001:db8::1', port: 8, destination: '::1', destinationPort: 9 } });
});

test('a header that names no one: v1 UNKNOWN, v2 LOCAL; and for addresses that are not IPs', () => {
  assert.equal(localProxyHeader('v1').toString(), 'PROXY UNKNOWN\r\n');
  assert.equal(localProxyHeader('v2').toString('hex'), `${SIG}20000000`);
  assert.equal(proxyHeader('v2', { address: '', port: 0 }, { address: '::1', port: 1 }).toString('hex'), `${SIG}20000000`);
});
