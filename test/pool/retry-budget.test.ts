import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MIN_RETRIES_PER_SECOND, RetryBudget } from '../../src/pool/retry-budget.ts';

/** How many retries the budget grants at `now` before it refuses one. */
function drain(b: RetryBudget, now: number): number {
  let n = 0;
  while (b.tryRetry(now)) n++;
  return n;
}

test('with no traffic the reserve allows 10 retries a second over the 10 s window', () => {
  assert.equal(drain(new RetryBudget(20), 5_000), MIN_RETRIES_PER_SECOND * 10);
});

test('requests earn their share: 1,000 requests at 20 % allow 200 retries beside the reserve', () => {
  const b = new RetryBudget(20);
  for (let i = 0; i < 1000; i++) b.request(1_000 + i);
  assert.equal(drain(b, 1_999), 200 + 100);
});

test('what is older than the window is forgotten, requests and retries alike', () => {
  const b = new RetryBudget(50);
  for (let i = 0; i < 400; i++) b.request(3_000);
  assert.equal(drain(b, 3_500), 200 + 100);
  // 9 s later both still count: nothing is granted.
  assert.equal(drain(b, 12_900), 0);
  // 10 s after that second the slot is empty again: only the reserve is left.
  assert.equal(drain(b, 13_000), 100);
  // A long quiet time clears every slot.
  assert.equal(drain(b, 60_000), 100);
});

test('a budget of 0 % grants the reserve only', () => {
  const b = new RetryBudget(0);
  for (let i = 0; i < 10_000; i++) b.request(100);
  assert.equal(drain(b, 200), 100);
});

test('a time older than the current second counts in the current slot: the window never moves back', () => {
  const b = new RetryBudget(100);
  for (let i = 0; i < 50; i++) b.request(20_500);
  // A request whose arrival was in the second before, counted now.
  b.request(19_900);
  assert.equal(drain(b, 20_600), 51 + 100);
});
