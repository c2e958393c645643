import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfigText } from '../../src/config/load.ts';
import { parseVipAddress } from '../../src/config/net.ts';

const HA_CONFIG = (address: string) => `
listeners:
  - { name: web, address: 127.0.0.1:8080 }
routes:
  - { name: all, pool: web }
pools:
  web:
    backends:
      - { name: a, url: "http://127.0.0.1:9001" }
ha:
  nodes: { lb1: { address: 127.0.0.1:7946 } }
  vips:
    - { name: vip, address: "${address}", interface: eth0 }
`;

test('an IPv6 VIP address is compiled to the canonical form ip prints, so the hook finds it again', () => {
  const cases: [string, string][] = [
    ['fd00:0::100/64', 'fd00::100/64'],
    ['FD00:0:0:0:0:0:0:100/64', 'fd00::100/64'],
    ['2001:0db8:0:0:1:0:0:1/64', '2001:db8::1:0:0:1/64'],
    ['fd00::a:0:0:0:1/64', 'fd00:0:0:a::1/64'],
    ['10.0.0.100/24', '10.0.0.100/24'],
  ];
  for (const [written, canonical] of cases) {
    const result = loadConfigText(HA_CONFIG(written), 'x.yaml', { env: {} });
    assert.ok(result.ok, result.ok ? '' : result.errors.join('\n'));
    assert.equal(result.config.ha?.vips[0].address, canonical, written);
  }
});

test('a VIP address with a zone index is refused', () => {
  assert.match(String(parseVipAddress('fe80::1%eth0/64')), /has a zone index/);
});
