import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatDuration, parseDuration } from '../../src/config/duration.ts';

test('durations with units read as milliseconds', () => {
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('2s'), 2_000);
  assert.equal(parseDuration('1m'), 60_000);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('1m30s'), 90_000);
  assert.equal(parseDuration('1h2m3s4ms'), 3_723_004);
  assert.equal(parseDuration('1.5s'), 1_500);
  assert.equal(parseDuration('0s'), 0);
});

test('anything else is not a duration: bare numbers, unknown units, spaces inside, signs, fractions of a millisecond', () => {
  for (const text of ['', '2', '30', '2 s', '5sec', '1d', '-1s', '+1s', 's', '1.5ms', '1m 30s', '1S']) {
    assert.equal(parseDuration(text), null, text);
  }
});

test('formatting gives the shortest exact text back', () => {
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(250), '250ms');
  assert.equal(formatDuration(1_500), '1.5s');
  assert.equal(formatDuration(90_000), '1m30s');
  assert.equal(formatDuration(3_600_000), '1h');
  assert.equal(formatDuration(333), '333ms');
  for (const ms of [1, 999, 1_000, 61_500, 3_723_004]) assert.equal(parseDuration(formatDuration(ms)), ms);
});
