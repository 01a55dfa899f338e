// The timelines of the Go package's own tests (limit/step_test.go and
// limit/property_test.go), row for row: the JavaScript port must produce the
// exact same decisions. Durations are written as in Go (2*h, 100*ms, 20*s+1).

import test from 'node:test';
import assert from 'node:assert/strict';
import { NS, RETRY_NEVER, MAX_DEBT, MAX_PERIOD, normalizeRule, step, apply, binding, expiresAt, capacity, InvalidRuleError } from '../src/limit.js';

const { ms, s, m, h } = NS;
const never = RETRY_NEVER;

// t0 is 2026-01-01T00:00:00Z, aligned to the hour (and so to every window).
const t0 = BigInt(Date.UTC(2026, 0, 1)) * ms;

/**
 * One request per row: at t0 + at, `cost` units, and the exact decision
 * expected. A denied request or a peek must leave the state as it was.
 */
function timeline(spec, rows) {
  const rule = normalizeRule(spec);
  let state = null;
  rows.forEach((w, i) => {
    const r = step(rule, state, t0 + w.at, w.cost);
    const want = {
      allowed: w.allowed,
      limit: rule.limit,
      remaining: w.remaining,
      resetAfter: w.reset ?? 0n,
      retryAfter: w.retry ?? 0n,
      delay: w.delay ?? 0n,
    };
    assert.deepEqual(r.decision, want, `row ${i} (at ${w.at} cost ${w.cost})`);
    if (!r.decision.allowed || w.cost === 0) {
      assert.equal(r.state, state, `row ${i}: a denied request or a peek changed the state`);
    }
    assert.equal(r.changed, r.decision.allowed && w.cost !== 0, `row ${i}: changed`);
    state = r.state;
  });
}

test('Go TestTokenBucketTimeline: 5 per 10h', () => {
  // One token every 2h, bucket of 5.
  timeline({ name: 'tb', algorithm: 'token_bucket', limit: 5, period: 10n * h }, [
    { at: 0n, cost: 1, allowed: true, remaining: 4n, reset: 2n * h },
    { at: 0n, cost: 1, allowed: true, remaining: 3n, reset: 4n * h },
    { at: 0n, cost: 1, allowed: true, remaining: 2n, reset: 6n * h },
    { at: 0n, cost: 1, allowed: true, remaining: 1n, reset: 8n * h },
    { at: 0n, cost: 1, allowed: true, remaining: 0n, reset: 10n * h },
    { at: 0n, cost: 1, allowed: false, remaining: 0n, retry: 2n * h, reset: 10n * h }, // 7200 s
    { at: 0n, cost: 0, allowed: false, remaining: 0n, retry: 2n * h, reset: 10n * h }, // peek
    { at: 0n, cost: 6, allowed: false, remaining: 0n, retry: never, reset: 10n * h }, // over capacity
    { at: 2n * h - 1n, cost: 1, allowed: false, remaining: 0n, retry: 1n, reset: 10n * h - 2n * h + 1n },
    { at: 2n * h, cost: 1, allowed: true, remaining: 0n, reset: 10n * h }, // refilled one token
    { at: 2n * h, cost: 2, allowed: false, remaining: 0n, retry: 4n * h, reset: 10n * h },
    { at: 1n * h, cost: 1, allowed: false, remaining: 0n, retry: 3n * h, reset: 11n * h }, // clock went back: nothing granted
    { at: 8n * h, cost: 0, allowed: true, remaining: 3n, reset: 4n * h }, // peek consumes nothing
    { at: 8n * h, cost: 3, allowed: true, remaining: 0n, reset: 10n * h },
    { at: 40n * h, cost: 5, allowed: true, remaining: 0n, reset: 10n * h }, // full after a long idle
  ]);
});

test('Go TestTokenBucketBurst: 10 per second, bucket of 20', () => {
  timeline({ name: 'tb', algorithm: 'token_bucket', limit: 10, period: s, burst: 20 }, [
    { at: 0n, cost: 20, allowed: true, remaining: 0n, reset: 2n * s },
    { at: 0n, cost: 1, allowed: false, remaining: 0n, retry: 100n * ms, reset: 2n * s },
    { at: 100n * ms, cost: 1, allowed: true, remaining: 0n, reset: 2n * s },
    { at: 1100n * ms, cost: 10, allowed: true, remaining: 0n, reset: 2n * s },
    { at: 1100n * ms, cost: 21, allowed: false, remaining: 0n, retry: never, reset: 2n * s },
  ]);
});

test('Go TestLeakyBucketShaping: 10 per second, queue of 3', () => {
  // Requests leave every 100ms.
  timeline({ name: 'lb', algorithm: 'leaky_bucket', limit: 10, period: s, burst: 3 }, [
    { at: 0n, cost: 1, allowed: true, remaining: 2n, reset: 100n * ms, delay: 0n },
    { at: 0n, cost: 1, allowed: true, remaining: 1n, reset: 200n * ms, delay: 100n * ms },
    { at: 0n, cost: 1, allowed: true, remaining: 0n, reset: 300n * ms, delay: 200n * ms },
    { at: 0n, cost: 1, allowed: false, remaining: 0n, retry: 100n * ms, reset: 300n * ms },
    { at: 100n * ms, cost: 1, allowed: true, remaining: 0n, reset: 300n * ms, delay: 200n * ms },
    { at: 150n * ms, cost: 0, allowed: false, remaining: 0n, retry: 50n * ms, reset: 250n * ms },
    { at: 400n * ms, cost: 2, allowed: true, remaining: 1n, reset: 200n * ms, delay: 0n },
    { at: 400n * ms, cost: 4, allowed: false, remaining: 1n, retry: never, reset: 200n * ms },
  ]);
});

test('Go TestFixedWindowTimeline: 3 per minute, windows on the minute', () => {
  timeline({ name: 'fw', algorithm: 'fixed_window', limit: 3, period: m }, [
    { at: 10n * s, cost: 1, allowed: true, remaining: 2n, reset: 50n * s },
    { at: 10n * s, cost: 2, allowed: true, remaining: 0n, reset: 50n * s },
    { at: 59n * s, cost: 1, allowed: false, remaining: 0n, retry: 1n * s, reset: 1n * s },
    { at: 59n * s, cost: 4, allowed: false, remaining: 0n, retry: never, reset: 1n * s },
    { at: 60n * s, cost: 0, allowed: true, remaining: 3n, reset: 0n }, // a new window
    { at: 60n * s, cost: 1, allowed: true, remaining: 2n, reset: 60n * s },
    { at: 59n * s, cost: 2, allowed: true, remaining: 0n, reset: 61n * s }, // clock went back: the later window still counts
    { at: 61n * s, cost: 1, allowed: false, remaining: 0n, retry: 59n * s, reset: 59n * s },
    { at: 180n * s, cost: 3, allowed: true, remaining: 0n, reset: 60n * s },
  ]);
});

test('Go TestSlidingWindowCounterTimeline: 10 per minute', () => {
  // The estimate is floor(prev*(60s-elapsed)/60s) + curr.
  timeline({ name: 'swc', algorithm: 'sliding_window_counter', limit: 10, period: m }, [
    { at: 10n * s, cost: 6, allowed: true, remaining: 4n, reset: 110n * s },
    { at: 30n * s, cost: 4, allowed: true, remaining: 0n, reset: 90n * s },
    // curr+1 > limit: passes only in the next window, once the weight of 10
    // drops below 10, i.e. 1ns into it.
    { at: 40n * s, cost: 1, allowed: false, remaining: 0n, retry: 20n * s + 1n, reset: 80n * s },
    { at: 40n * s, cost: 11, allowed: false, remaining: 0n, retry: never, reset: 80n * s },
    // 15s into the next window: floor(10*45/60) = floor(7.5) = 7 used.
    { at: 75n * s, cost: 3, allowed: true, remaining: 0n, reset: 105n * s },
    // 2 more need floor(10*(60s-e)/60s) <= 5, i.e. e > 24s.
    { at: 75n * s, cost: 2, allowed: false, remaining: 0n, retry: 9n * s + 1n, reset: 105n * s },
    { at: 84n * s + 1n, cost: 2, allowed: true, remaining: 0n, reset: 96n * s - 1n },
    // clock back: nothing granted; curr is 5, so the weight must fall to 4
    { at: 80n * s, cost: 0, allowed: false, remaining: 0n, retry: 10n * s + 1n, reset: 100n * s },
    { at: 300n * s, cost: 10, allowed: true, remaining: 0n, reset: 120n * s },
  ]);
});

test('Go TestSlidingWindowLogTimeline: 3 per 10s, exact', () => {
  timeline({ name: 'swl', algorithm: 'sliding_window_log', limit: 3, period: 10n * s }, [
    { at: 0n, cost: 1, allowed: true, remaining: 2n, reset: 10n * s },
    { at: 2n * s, cost: 1, allowed: true, remaining: 1n, reset: 10n * s },
    { at: 4n * s, cost: 1, allowed: true, remaining: 0n, reset: 10n * s },
    { at: 5n * s, cost: 1, allowed: false, remaining: 0n, retry: 5n * s, reset: 9n * s },
    { at: 5n * s, cost: 4, allowed: false, remaining: 0n, retry: never, reset: 9n * s },
    { at: 10n * s, cost: 1, allowed: true, remaining: 0n, reset: 10n * s }, // the t0 entry left
    { at: 12n * s, cost: 2, allowed: false, remaining: 1n, retry: 2n * s, reset: 8n * s },
    { at: 14n * s, cost: 2, allowed: true, remaining: 0n, reset: 10n * s },
    { at: 13n * s, cost: 1, allowed: false, remaining: 0n, retry: 7n * s, reset: 11n * s }, // clock back
    { at: 13n * s, cost: 0, allowed: false, remaining: 0n, retry: 7n * s, reset: 11n * s },
    { at: 24n * s, cost: 3, allowed: true, remaining: 0n, reset: 10n * s },
  ]);
});

test('Go TestNormalize', () => {
  const tb = normalizeRule({ name: 'a', algorithm: 'token_bucket', limit: 100, period: m });
  assert.equal(tb.burst, 100n, 'token bucket burst defaults to limit');
  const fw = normalizeRule({ name: 'a', algorithm: 'fixed_window', limit: 100, period: m, burst: 7 });
  assert.equal(fw.burst, 0n, 'window algorithms ignore burst');
  assert.equal(capacity(fw), 100n);
  const bad = [
    [{ algorithm: undefined, limit: 1, period: s }, 'algorithm'],
    [{ algorithm: 'token_bucket', limit: 0, period: s }, 'limit'],
    [{ algorithm: 'token_bucket', limit: -5, period: s }, 'limit'],
    [{ algorithm: 'token_bucket', limit: 1, period: 0n }, 'period'],
    [{ algorithm: 'token_bucket', limit: 1, period: 32n * 24n * h }, 'period'],
    [{ algorithm: 'token_bucket', limit: 1, period: s, burst: -1 }, 'burst'],
    [{ algorithm: 'token_bucket', limit: 1, period: 24n * h, burst: 1000 }, 'burst'], // 1000 days to refill
    [{ algorithm: 'token_bucket', limit: 1e9, period: ms }, 'limit'], // more than one per nanosecond
    [{ algorithm: 'sliding_window_log', limit: 1e6, period: s }, 'limit'],
  ];
  for (const [input, field] of bad) {
    assert.throws(
      () => normalizeRule(input),
      (err) => err instanceof InvalidRuleError && err.field === field,
      `${input.algorithm} ${input.limit} ${input.period} ${input.burst}`,
    );
  }
  assert.throws(() => normalizeRule({ algorithm: 'token_bucket', limit: 1e9, period: ms }), /nanosecond/);
  assert.throws(() => normalizeRule({ algorithm: 'sliding_window_log', limit: 1e6, period: s }), /sliding_window_log/);
});

test('Go TestStateOfAnotherAlgorithmIsFresh', () => {
  const r = normalizeRule({ name: 'x', algorithm: 'token_bucket', limit: 2, period: s });
  const stale = { alg: 'fixed_window', t: t0 + h, n: 99n, p: 0n, log: [] };
  const { decision } = step(r, stale, t0, 2);
  assert.equal(decision.allowed, true);
  assert.equal(decision.remaining, 0n);
  assert.equal(expiresAt(r, stale), 0n, 'a foreign state must be expired');
});

test('Go TestApplyAllOrNothing', () => {
  const minute = normalizeRule({ name: 'm', algorithm: 'token_bucket', limit: 3, period: m });
  const hour = normalizeRule({ name: 'h', algorithm: 'sliding_window_log', limit: 4, period: h });
  const rules = [minute, hour];
  const states = [null, null];
  let { verdict: v, changed } = apply(rules, states, t0, 3);
  assert.equal(changed, true);
  assert.equal(v.allowed, true);
  assert.equal(v.decisions.length, 2);
  assert.equal(v.decisions[0].remaining, 0n);
  assert.equal(v.decisions[1].remaining, 1n);
  assert.equal(binding(v), 0);

  const before = states[1];
  ({ verdict: v, changed } = apply(rules, states, t0, 1));
  assert.equal(changed, false, 'a denial saves nothing');
  // The minute limit denies; the hour limit must be untouched.
  assert.equal(v.allowed, false);
  assert.equal(v.retryAfter, 20n * s);
  assert.equal(v.decisions[1].allowed, true);
  assert.equal(v.decisions[1].remaining, 1n);
  assert.equal(states[1], before);
  assert.equal(states[1].log.length, before.log.length);

  ({ verdict: v } = apply(rules, states, t0 + m, 2));
  // The hour limit denies 2; the minute limit must keep 3.
  assert.equal(v.allowed, false);
  assert.equal(v.retryAfter, 59n * m);
  assert.equal(v.decisions[0].allowed, true);
  assert.equal(v.decisions[0].remaining, 3n);
  assert.equal(binding(v), 1);

  ({ verdict: v } = apply(rules, states, t0 + m, 5));
  assert.equal(v.allowed, false, 'cost 5 exceeds both capacities');
  assert.equal(v.retryAfter, never);

  ({ verdict: v, changed } = apply(rules, states, t0 + m, 0));
  assert.equal(changed, false, 'a peek saves nothing');
  assert.equal(v.allowed, true, 'peek');
  assert.equal(v.decisions[0].remaining, 3n);
  assert.equal(v.decisions[1].remaining, 1n);
});

test('Go TestRaisingTheRateKeepsConsumedUnits', () => {
  const ten = normalizeRule({ name: 'a', algorithm: 'token_bucket', limit: 10, period: h });
  const twenty = normalizeRule({ name: 'a', algorithm: 'token_bucket', limit: 20, period: h });
  let st = step(ten, null, t0, 4).state;
  assert.equal(step(twenty, st, t0, 0).decision.remaining, 16n, 'used 4 of 10, raised to 20');
  st = step(ten, st, t0, 6).state;
  const d = step(twenty, st, t0, 1).decision;
  assert.equal(d.allowed, true, 'used 10 of 10, raised to 20');
  assert.equal(d.remaining, 9n);
  const five = normalizeRule({ name: 'a', algorithm: 'token_bucket', limit: 5, period: h });
  const low = step(five, st, t0, 1).decision;
  // Used 10, lowered to 5: denied until 6 units refill at 12m each.
  assert.equal(low.allowed, false);
  assert.equal(low.retryAfter, 72n * m);
});

// Lowering the rate: the subject waits for what it consumed at the new rate,
// and retryAfter is exact once the rescaled state is saved, as apply does.
test('Go TestLoweringTheRateIsExact', () => {
  const fast = normalizeRule({ name: 'a', algorithm: 'token_bucket', limit: 10, period: s });
  const slow = normalizeRule({ name: 'a', algorithm: 'token_bucket', limit: 1, period: s });
  const states = [null];
  assert.equal(apply([fast], states, t0, 10).verdict.allowed, true);
  const used = states[0];
  const { verdict: v, changed } = apply([slow], states, t0, 1);
  assert.equal(v.allowed, false);
  assert.equal(changed, true, 'the state was rescaled to 1/s and must be saved');
  assert.equal(v.retryAfter, 10n * s, '10 units owed at 1/s');
  assert.notEqual(states[0], used, 'apply replaced the state');
  assert.deepEqual({ t: states[0].t, n: states[0].n }, { t: t0 + 10n * s, n: s }, 'TAT 10s ahead, written at I = 1s');
  assert.equal(used.t, t0 + s, 'the old state object is untouched');
  // Nothing was consumed: a second look at the same instant changes nothing.
  const again = apply([slow], states, t0, 1);
  assert.equal(again.changed, false);
  assert.equal(again.verdict.retryAfter, 10n * s);
  // 1s later the subject is still denied: it does not refill at the old rate.
  const later = apply([slow], states, t0 + s, 1);
  assert.equal(later.verdict.allowed, false, 'allowed after 1s: the subject refilled at the old rate');
  assert.equal(later.verdict.retryAfter, 9n * s);
  assert.equal(later.changed, false);
  assert.equal(apply([slow], [...states], t0 + 10n * s - 1n, 1).verdict.allowed, false, 'allowed 1ns before retryAfter');
  assert.equal(apply([slow], states, t0 + 10n * s, 1).verdict.allowed, true, 'denied at retryAfter');
});

// A drastic cut cannot overflow into a full bucket: the debt is capped.
test('Go TestRescaleIsCapped', () => {
  const big = normalizeRule({ name: 'a', algorithm: 'token_bucket', limit: 10_000, period: h });
  const tiny = normalizeRule({ name: 'a', algorithm: 'token_bucket', limit: 1, period: MAX_PERIOD });
  assert.equal(MAX_DEBT, 2n * 31n * 24n * h);
  const states = [null];
  assert.equal(apply([big], states, t0, 10_000).verdict.allowed, true);
  // The debt of 1h at 0.36s per unit is 10000 units of 744h: 7440000h, capped.
  const { verdict: v, changed } = apply([tiny], states, t0, 1);
  assert.equal(v.allowed, false, 'after cutting 10000/h to 1/744h');
  assert.equal(v.retryAfter, MAX_DEBT);
  assert.equal(changed, true);
  assert.deepEqual({ t: states[0].t, n: states[0].n }, { t: t0 + MAX_DEBT, n: MAX_PERIOD });
  // The same through step (a peek), and it stays capped, never a full bucket.
  const peek = step(tiny, { alg: 'token_bucket', t: t0 + h, n: h / 10_000n, p: 0n, log: [] }, t0, 0);
  assert.equal(peek.changed, true);
  assert.equal(peek.decision.allowed, false);
  assert.equal(peek.decision.remaining, 0n);
  assert.equal(peek.decision.retryAfter, MAX_DEBT);
  assert.equal(peek.decision.resetAfter, MAX_DEBT);
  // One nanosecond before retryAfter it is still denied, at it allowed.
  assert.equal(apply([tiny], [...states], t0 + MAX_DEBT - 1n, 1).verdict.allowed, false);
  assert.equal(apply([tiny], [...states], t0 + MAX_DEBT, 1).verdict.allowed, true);
});

// A clock that stepped back, met by a raised rate, must not shrink the span it
// went back by: the rescale measures the debt from the latest instant the
// state was written at (its p), not from the earlier now.
test('Go TestRaisedRateWithClockBackGrantsNothing', () => {
  const slow = normalizeRule({ name: 'a', algorithm: 'token_bucket', limit: 1, period: s, burst: 10 });
  const fast = normalizeRule({ name: 'a', algorithm: 'token_bucket', limit: 10, period: s, burst: 10 });
  const states = [null];
  apply([slow], states, t0, 10); // TAT = t0+10s
  apply([fast], states, t0 - 5n * s, 0);
  let { verdict: v } = apply([fast], states, t0, 0);
  assert.equal(v.decisions[0].remaining, 0n, '10 slow units rescale to 1s of debt at 10/s, so none is back yet');
  ({ verdict: v } = apply([fast], states, t0 + s, 0));
  assert.equal(v.decisions[0].remaining, 10n, 'a full bucket at t0+1s');
});
