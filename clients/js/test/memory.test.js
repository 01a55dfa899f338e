// InMemoryLimiter: the core used by one process, with an injected clock.

import test from 'node:test';
import assert from 'node:assert/strict';
import { InMemoryLimiter, NS, InvalidRuleError, systemClock } from '../src/limit.js';
import { manualClock } from '../test-support/service.js';

const { ms, s, m, h } = NS;
const T0 = manualClock()();

/** The stored bucket state of one rule of a key, relative to the clock's start. */
function stored(limiter, key, rule) {
  const st = limiter.entries.get(key).states.get(rule);
  return { t: st.t - T0, n: st.n };
}

test('InMemoryLimiter: per-key limits with an injected clock', () => {
  const clock = manualClock();
  const limiter = new InMemoryLimiter({
    clock,
    rules: [{ name: 'orders', algorithm: 'token_bucket', limit: 5, period: '10h' }],
  });
  for (let i = 4n; i >= 0n; i--) {
    const v = limiter.check('alice');
    assert.equal(v.allowed, true);
    assert.equal(v.decisions[0].remaining, i);
  }
  const denied = limiter.check('alice');
  assert.equal(denied.allowed, false);
  assert.equal(denied.retryAfter, 2n * h);
  // Another user is not affected.
  assert.equal(limiter.check('bob').decisions[0].remaining, 4n);
  // A peek consumes nothing.
  assert.equal(limiter.peek('carol').decisions[0].remaining, 5n);
  assert.equal(limiter.size, 2, 'peeks and denials store nothing');
  clock.advance(2n * h);
  assert.equal(limiter.check('alice').allowed, true);
  assert.equal(limiter.check('alice').allowed, false);
});

test('InMemoryLimiter: stale keys expire, a swept key starts fresh', () => {
  const clock = manualClock();
  const limiter = new InMemoryLimiter({
    clock,
    rules: [
      { name: 'second', algorithm: 'fixed_window', limit: 2, period: '1s' },
      { name: 'minute', algorithm: 'sliding_window_log', limit: 3, period: '1m' },
    ],
  });
  limiter.check('a');
  limiter.check('b');
  clock.advance(30n * s);
  limiter.check('b');
  assert.equal(limiter.size, 2);
  // 'a' was last written at 0s: its log entry expires at 60s; 'b' at 90s.
  clock.advance(30n * s);
  assert.equal(limiter.sweep(), 1);
  assert.equal(limiter.size, 1);
  assert.equal(limiter.peek('a').decisions[1].remaining, 3n);
  clock.advance(30n * s - 1n);
  assert.equal(limiter.sweep(), 0);
  clock.advance(1n);
  assert.equal(limiter.sweep(), 1);
  assert.equal(limiter.size, 0);
});

test('InMemoryLimiter: an expired entry is dropped when its key comes back', () => {
  const clock = manualClock();
  const limiter = new InMemoryLimiter({ clock, rules: [{ name: 'r', algorithm: 'fixed_window', limit: 1, period: '1m' }] });
  assert.equal(limiter.check('k').allowed, true);
  assert.equal(limiter.check('k').allowed, false);
  clock.advance(m);
  assert.equal(limiter.check('k').allowed, true);
  assert.equal(limiter.size, 1);
});

test('InMemoryLimiter: at most maxKeys keys; the least recently written goes first', () => {
  const clock = manualClock();
  const limiter = new InMemoryLimiter({
    clock,
    maxKeys: 3,
    rules: [{ name: 'r', algorithm: 'fixed_window', limit: 10, period: '1h' }],
  });
  for (const k of ['a', 'b', 'c']) limiter.check(k);
  limiter.check('a'); // a is now the most recently written
  limiter.check('d'); // evicts b
  assert.equal(limiter.size, 3);
  assert.equal(limiter.evictions, 1);
  assert.deepEqual([...limiter.entries.keys()], ['c', 'a', 'd']);
  // The evicted key forgot its consumption (the documented trade-off).
  assert.equal(limiter.peek('b').decisions[0].remaining, 10n);
  assert.equal(limiter.peek('a').decisions[0].remaining, 8n);
  // Expired entries at the front are dropped before live ones are evicted.
  clock.advance(h);
  limiter.check('e');
  assert.equal(limiter.evictions, 1);
  assert.ok(limiter.size <= 3);
});

test('InMemoryLimiter: setRules keeps state per rule name', () => {
  const clock = manualClock();
  const limiter = new InMemoryLimiter({
    clock,
    rules: [{ name: 'hourly', algorithm: 'token_bucket', limit: 10, period: '1h' }],
  });
  for (let i = 0; i < 10; i++) limiter.check('u');
  assert.equal(limiter.check('u').allowed, false);
  // Raised to 20 per hour: the 10 consumed units carry over, 10 are left.
  limiter.setRules([{ name: 'hourly', algorithm: 'token_bucket', limit: 20, period: '1h' }]);
  assert.equal(limiter.peek('u').decisions[0].remaining, 10n);
  // That peek saved the state rescaled to 20/h: 10 units at I = 3m.
  assert.deepEqual(stored(limiter, 'u', 'hourly'), { t: 30n * m, n: 3n * m });
  // Lowered to 2 per hour (I = 30m, bucket of 2): the debt of 10 units
  // still outstanding carries over, 5h at the new rate, so nothing passes
  // now, and a 1-unit request waits until the debt is back to one bucket
  // (1h): 4h30m.
  limiter.setRules([{ name: 'hourly', algorithm: 'token_bucket', limit: 2, period: '1h' }]);
  const v = limiter.peek('u');
  assert.equal(v.allowed, false);
  assert.equal(v.decisions[0].remaining, 0n);
  assert.equal(v.retryAfter, 4n * h + 30n * m);
  // The peek saved the rescaled state: the key now refills at 2/h.
  assert.deepEqual(stored(limiter, 'u', 'hourly'), { t: 5n * h, n: 30n * m });
  // An hour later (when the 10 units would have refilled at 10/h) it is
  // still denied, and the wait has shrunk by exactly that hour.
  clock.advance(h);
  const later = limiter.check('u');
  assert.equal(later.allowed, false);
  assert.equal(later.retryAfter, 3n * h + 30n * m);
  // The entry expires at its stored, rescaled TAT: 5h after the units were used.
  clock.advance(4n * h - 1n);
  assert.equal(limiter.sweep(), 0);
  clock.advance(1n);
  assert.equal(limiter.sweep(), 1);
  assert.equal(limiter.peek('u').decisions[0].remaining, 2n);
  // A renamed rule starts fresh.
  limiter.setRules([{ name: 'daily', algorithm: 'fixed_window', limit: 1, period: '24h' }]);
  assert.equal(limiter.check('u').allowed, true);
  assert.equal(limiter.check('u').allowed, false);
  assert.throws(() => limiter.setRules([{ name: 'x', algorithm: 'fixed_window', limit: 1, period: '1s' }, { name: 'x', algorithm: 'fixed_window', limit: 2, period: '1m' }]), InvalidRuleError);
  assert.throws(() => limiter.setRules([{ name: 'x', algorithm: 'fixed_window', limit: 0, period: '1s' }]), InvalidRuleError);
  // A failed setRules keeps the previous rules.
  assert.equal(limiter.rules[0].name, 'daily');
});

test('InMemoryLimiter: a denied check after a rate cut saves the rescaled state', () => {
  const clock = manualClock();
  const limiter = new InMemoryLimiter({
    clock,
    rules: [
      { name: 'burst', algorithm: 'token_bucket', limit: 10, period: '1s' },
      { name: 'minute', algorithm: 'fixed_window', limit: 100, period: '1m' },
    ],
  });
  for (let i = 0; i < 10; i++) assert.equal(limiter.check('u').allowed, true);
  const window = limiter.entries.get('u').states.get('minute');
  limiter.setRules([
    { name: 'burst', algorithm: 'token_bucket', limit: 1, period: '1s' },
    { name: 'minute', algorithm: 'fixed_window', limit: 100, period: '1m' },
  ]);
  const v = limiter.check('u');
  assert.equal(v.allowed, false);
  assert.equal(v.retryAfter, 10n * s);
  assert.deepEqual(stored(limiter, 'u', 'burst'), { t: 10n * s, n: s });
  assert.equal(limiter.entries.get('u').states.get('minute'), window, 'nothing consumed from the window');
  clock.advance(s);
  assert.equal(limiter.check('u').retryAfter, 9n * s, 'still denied 1s later: it refills at 1/s');
  clock.advance(9n * s);
  assert.equal(limiter.check('u').allowed, true);
  // A peek at a fresh key, or at a key whose rate did not change, stores nothing.
  assert.equal(limiter.peek('fresh').allowed, true);
  assert.equal(limiter.entries.has('fresh'), false);
});

test('InMemoryLimiter: a clock stepped back to meet a raised rate grants nothing', () => {
  const clock = manualClock();
  const limiter = new InMemoryLimiter({ clock, rules: [{ name: 'b', algorithm: 'token_bucket', limit: 1, period: '1s', burst: 10 }] });
  assert.equal(limiter.check('u', 10).allowed, true); // TAT 10s ahead, written at T0
  limiter.setRules([{ name: 'b', algorithm: 'token_bucket', limit: 10, period: '1s', burst: 10 }]);
  clock.advance(-5n * s);
  assert.equal(limiter.peek('u').allowed, false, '1s of debt at 10/s, counted from T0, is 6s ahead of T0-5s');
  assert.deepEqual(stored(limiter, 'u', 'b'), { t: s, n: 100n * ms }, 'the rescale is saved, anchored at T0');
  assert.equal(limiter.entries.get('u').states.get('b').p, T0);
  clock.advance(5n * s);
  assert.equal(limiter.peek('u').decisions[0].remaining, 0n, 'none back at T0');
  clock.advance(s);
  assert.equal(limiter.check('u', 10).allowed, true, 'a full bucket at T0+1s');
});

test('InMemoryLimiter: defaults and argument checks', () => {
  const now = systemClock();
  assert.equal(typeof now, 'bigint');
  assert.ok(now > 1_700_000_000n * s);
  assert.equal(now % ms, 0n);
  // The system clock is the default; the decision is checked at a fixed
  // instant (two reads of the wall clock may be a millisecond apart).
  assert.equal(new InMemoryLimiter({ rules: [{ name: 'r', algorithm: 'token_bucket', limit: 1, period: '1s' }] }).check('x').allowed, true);
  const limiter = new InMemoryLimiter({ rules: [{ name: 'r', algorithm: 'leaky_bucket', limit: 2, period: '1s' }], clock: () => now });
  assert.equal(limiter.check('x').allowed, true);
  assert.equal(limiter.check('x').delay, 500n * ms);
  assert.throws(() => new InMemoryLimiter({ rules: [], maxKeys: 0 }), RangeError);
  assert.throws(() => limiter.check('x', -1), RangeError);
  assert.throws(() => limiter.check('x', 1.5), RangeError);
});
