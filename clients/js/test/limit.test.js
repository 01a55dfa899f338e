// Tests of the reference algorithms (src/limit.js) with exact numbers: the
// same expectations as the Go package limit. No sleeps: every instant is
// passed in as BigInt Unix nanoseconds.

import test from 'node:test';
import assert from 'node:assert/strict';
import {
  NS,
  RETRY_NEVER,
  MAX_PERIOD,
  normalizeRule,
  parseAlgorithm,
  parseDuration,
  step,
  apply,
  combine,
  binding,
  capacity,
  expiresAt,
  weigh,
  InvalidRuleError,
} from '../src/limit.js';
import { Prng } from '../test-support/prng.js';

const { ms, s, m, h } = NS;

// A Unix instant on a minute boundary: 1_700_000_040 s = 28_333_334 minutes.
const M = 1_700_000_040n * s;
assert.equal(M % m, 0n);

/** Runs requests of `cost` at `now` in order, threading the state. */
function run(rule, state, now, costs) {
  const out = [];
  for (const cost of costs) {
    const r = step(rule, state, now, cost);
    out.push(r.decision);
    state = r.state;
  }
  return { state, decisions: out };
}

test('normalizeRule fills defaults and validates like Rule.Normalize', () => {
  const tb = normalizeRule({ name: 'x', algorithm: 'gcra', limit: 5, period: '10h' });
  assert.deepEqual(tb, { name: 'x', algorithm: 'token_bucket', limit: 5n, period: 10n * h, burst: 5n });
  assert.ok(Object.isFrozen(tb));
  assert.equal(normalizeRule({ algorithm: 'fixed_window', limit: 5, period: '1m', burst: 9 }).burst, 0n);
  assert.equal(normalizeRule({ algorithm: 'leaky_bucket', limit: 5, period: 60n * s, burst: 2n }).burst, 2n);
  assert.equal(capacity(normalizeRule({ algorithm: 'token_bucket', limit: 5, period: '1s', burst: 20 })), 20n);
  assert.equal(capacity(normalizeRule({ algorithm: 'sliding_window_log', limit: 5, period: '1s' })), 5n);

  const bad = [
    [{ algorithm: 'nope', limit: 1, period: '1s' }, 'algorithm'],
    [{ algorithm: undefined, limit: 1, period: '1s' }, 'algorithm'],
    [{ algorithm: 'fixed_window', limit: 0, period: '1s' }, 'limit'],
    [{ algorithm: 'fixed_window', limit: 1_000_000_001, period: '1s' }, 'limit'],
    [{ algorithm: 'fixed_window', limit: 1.5, period: '1s' }, 'limit'],
    [{ algorithm: 'fixed_window', limit: 1, period: '999us' }, 'period'],
    [{ algorithm: 'fixed_window', limit: 1, period: MAX_PERIOD + 1n }, 'period'],
    [{ algorithm: 'fixed_window', limit: 1, period: 1000 }, 'period'], // a Number has no unit
    [{ algorithm: 'fixed_window', limit: 1, period: NS.ms + 1n }, 'period'], // not whole milliseconds
    [{ algorithm: 'fixed_window', limit: 1, period: '1500us' }, 'period'],
    [{ algorithm: 'token_bucket', limit: 1, period: '1s', burst: -1 }, 'burst'],
    // 2e6 per 1ms is more than one per nanosecond
    [{ algorithm: 'token_bucket', limit: 2_000_000, period: '1ms' }, 'limit'],
    // 1 per 31 days with burst 2 takes 62 days to refill
    [{ algorithm: 'token_bucket', limit: 1, period: '744h', burst: 2 }, 'burst'],
    [{ algorithm: 'sliding_window_log', limit: 100_001, period: '1s' }, 'limit'],
  ];
  for (const [input, field] of bad) {
    assert.throws(() => normalizeRule(input), (err) => err instanceof InvalidRuleError && err.field === field, JSON.stringify(input, (k, v) => (typeof v === 'bigint' ? String(v) : v)));
  }
  // Boundaries that are valid.
  normalizeRule({ algorithm: 'token_bucket', limit: 1, period: '744h', burst: 1 });
  normalizeRule({ algorithm: 'token_bucket', limit: 1_000_000, period: '1ms' });
  normalizeRule({ algorithm: 'sliding_window_log', limit: 100_000, period: '1s' });
});

test('parseDuration and parseAlgorithm', () => {
  assert.equal(parseDuration('10h'), 10n * h);
  assert.equal(parseDuration('1h30m'), 90n * m);
  assert.equal(parseDuration('1m30s250ms'), 90n * s + 250n * ms);
  assert.equal(parseDuration('5us'), 5000n);
  assert.equal(parseDuration('7ns'), 7n);
  assert.equal(parseDuration(42n), 42n);
  for (const bad of ['', '1', '1.5h', 'h', '1d', ' 1s', '1s ']) assert.throws(() => parseDuration(bad), TypeError, bad);
  assert.equal(parseAlgorithm('gcra'), 'token_bucket');
  assert.equal(parseAlgorithm('sliding_window_counter'), 'sliding_window_counter');
  assert.throws(() => parseAlgorithm('Token_Bucket'), InvalidRuleError);
});

test('token bucket: 5 per 10h allows 5 (remaining 4..0), the 6th retries after 2h', () => {
  const rule = normalizeRule({ name: 'tb', algorithm: 'token_bucket', limit: 5, period: '10h' });
  // Emission interval I = 10h/5 = 2h, tolerance tau = burst*I = 10h.
  let state = null;
  for (let k = 1n; k <= 5n; k++) {
    const r = step(rule, state, M, 1);
    assert.equal(r.decision.allowed, true);
    assert.equal(r.decision.remaining, 5n - k);
    assert.equal(r.decision.resetAfter, k * 2n * h); // TAT - now
    assert.equal(r.decision.retryAfter, 0n);
    assert.equal(r.decision.limit, 5n);
    assert.equal(r.state.t, M + k * 2n * h);
    state = r.state;
  }
  const sixth = step(rule, state, M, 1);
  assert.equal(sixth.decision.allowed, false);
  assert.equal(sixth.decision.retryAfter, 2n * h);
  assert.equal(sixth.decision.retryAfter / s, 7200n);
  assert.equal(sixth.decision.remaining, 0n);
  assert.equal(sixth.decision.resetAfter, 10n * h);
  assert.equal(sixth.state, state, 'a denied request leaves the state as it is');

  // One nanosecond early is still too early; at exactly 2h one token is back.
  assert.equal(step(rule, state, M + 2n * h - 1n, 1).decision.allowed, false);
  assert.equal(step(rule, state, M + 2n * h - 1n, 1).decision.retryAfter, 1n);
  const later = step(rule, state, M + 2n * h, 1);
  assert.equal(later.decision.allowed, true);
  assert.equal(later.decision.remaining, 0n);
  // After 10h untouched the bucket is full again.
  assert.equal(step(rule, state, M + 10n * h, 0).decision.remaining, 5n);
});

test('token bucket: burst larger than limit', () => {
  // 10 per second (I = 100ms) with a bucket of 20 (tau = 2s).
  const rule = normalizeRule({ algorithm: 'token_bucket', limit: 10, period: '1s', burst: 20 });
  const { state, decisions } = run(rule, null, M, Array(21).fill(1));
  assert.deepEqual(
    decisions.slice(0, 20).map((d) => d.remaining),
    Array.from({ length: 20 }, (_, i) => BigInt(19 - i)),
  );
  assert.equal(decisions[20].allowed, false);
  assert.equal(decisions[20].retryAfter, 100n * ms);
  // One second later, 10 tokens (the limit, not the burst) are back.
  assert.equal(step(rule, state, M + s, 0).decision.remaining, 10n);
  // A whole burst passes in one request when the bucket is full.
  const big = step(rule, null, M, 20);
  assert.equal(big.decision.allowed, true);
  assert.equal(big.decision.remaining, 0n);
  assert.equal(big.decision.resetAfter, 2n * s);
});

test('cost above capacity is denied with RETRY_NEVER, for every algorithm', () => {
  const rules = [
    normalizeRule({ algorithm: 'token_bucket', limit: 10, period: '1s', burst: 5 }),
    normalizeRule({ algorithm: 'leaky_bucket', limit: 10, period: '1s', burst: 5 }),
    normalizeRule({ algorithm: 'fixed_window', limit: 5, period: '1s' }),
    normalizeRule({ algorithm: 'sliding_window_counter', limit: 5, period: '1s' }),
    normalizeRule({ algorithm: 'sliding_window_log', limit: 5, period: '1s' }),
  ];
  for (const rule of rules) {
    const fresh = step(rule, null, M, 6);
    assert.equal(fresh.decision.allowed, false, rule.algorithm);
    assert.equal(fresh.decision.retryAfter, RETRY_NEVER, rule.algorithm);
    assert.equal(fresh.decision.remaining, 5n, `${rule.algorithm}: the capacity is reported untouched`);
    assert.equal(fresh.state, null);
    // The capacity itself passes.
    assert.equal(step(rule, null, M, 5).decision.allowed, true, rule.algorithm);
  }
});

test('cost 0 is a peek: it consumes nothing and answers for cost 1', () => {
  for (const algorithm of ['token_bucket', 'leaky_bucket', 'fixed_window', 'sliding_window_counter', 'sliding_window_log']) {
    const rule = normalizeRule({ algorithm, limit: 3, period: '1m' });
    let state = null;
    for (let i = 0; i < 100; i++) {
      const p = step(rule, state, M, 0);
      assert.equal(p.decision.allowed, true);
      assert.equal(p.decision.remaining, 3n);
      assert.equal(p.state, state);
    }
    ({ state } = run(rule, null, M, [1, 1]));
    const p = step(rule, state, M, 0);
    assert.equal(p.state, state, algorithm);
    assert.equal(p.decision.allowed, true);
    assert.equal(p.decision.remaining, 1n, `${algorithm}: a peek reports the remaining before consuming`);
    ({ state } = run(rule, state, M, [1]));
    const exhausted = step(rule, state, M, 0);
    assert.equal(exhausted.decision.allowed, false, `${algorithm}: a peek at an exhausted limit is denied`);
    assert.equal(exhausted.decision.retryAfter, step(rule, state, M, 1).decision.retryAfter);
    assert.ok(exhausted.decision.retryAfter > 0n);
  }
});

test('leaky bucket: delays 0, I, 2I, then denies when the queue is full', () => {
  // 4 per second: I = 250ms; queue of 3: tau = 750ms.
  const rule = normalizeRule({ algorithm: 'leaky_bucket', limit: 4, period: '1s', burst: 3 });
  const { state, decisions } = run(rule, null, M, [1, 1, 1, 1]);
  assert.deepEqual(
    decisions.map((d) => [d.allowed, d.delay, d.remaining]),
    [
      [true, 0n, 2n],
      [true, 250n * ms, 1n],
      [true, 500n * ms, 0n],
      [false, 0n, 0n],
    ],
  );
  // TAT = M+750ms; a 4th unit would end at M+1s, 250ms past the tolerance.
  assert.equal(decisions[3].retryAfter, 250n * ms);
  const after = step(rule, state, M + 250n * ms, 1);
  assert.equal(after.decision.allowed, true);
  assert.equal(after.decision.delay, 500n * ms); // the queue drains to it at M+750ms

  // Requests arriving exactly I apart are never delayed.
  let st = null;
  for (let i = 0n; i < 10n; i++) {
    const r = step(rule, st, M + i * 250n * ms, 1);
    assert.equal(r.decision.allowed, true);
    assert.equal(r.decision.delay, 0n);
    st = r.state;
  }
  // A token bucket with the same parameters admits the same requests, without delay.
  const tb = normalizeRule({ algorithm: 'token_bucket', limit: 4, period: '1s', burst: 3 });
  assert.deepEqual(
    run(tb, null, M, [1, 1, 1, 1]).decisions.map((d) => [d.allowed, d.delay]),
    [[true, 0n], [true, 0n], [true, 0n], [false, 0n]],
  );
});

test('fixed window: windows are aligned to multiples of the period since the epoch', () => {
  const rule = normalizeRule({ algorithm: 'fixed_window', limit: 3, period: '1m' });
  // The first request comes 59s into the minute: its window still ends on the minute.
  const t = M + 59n * s;
  const { state, decisions } = run(rule, null, t, [1, 1, 1, 1]);
  assert.deepEqual(
    decisions.map((d) => [d.allowed, d.remaining, d.resetAfter, d.retryAfter]),
    [
      [true, 2n, 1n * s, 0n],
      [true, 1n, 1n * s, 0n],
      [true, 0n, 1n * s, 0n],
      [false, 0n, 1n * s, 1n * s],
    ],
  );
  assert.deepEqual([state.t, state.n], [M, 3n]);
  // One nanosecond before the boundary: still the old window.
  assert.equal(step(rule, state, M + m - 1n, 1).decision.retryAfter, 1n);
  // On the boundary a new window starts with the full limit.
  const next = step(rule, state, M + m, 1);
  assert.deepEqual([next.decision.allowed, next.decision.remaining, next.decision.resetAfter], [true, 2n, m]);
  assert.deepEqual([next.state.t, next.state.n], [M + m, 1n]);
  // A fresh key reports no reset; expiry is the end of the window.
  assert.equal(step(rule, null, t, 0).decision.resetAfter, 0n);
  assert.equal(expiresAt(rule, state), M + m);
});

test('sliding window log: exact, never more than limit in any period (seeded property)', () => {
  const rng = new Prng(20240601);
  for (let round = 0; round < 60; round++) {
    const limit = 1 + rng.int(8);
    const period = BigInt(1 + rng.int(20)) * 100n * ms;
    const rule = normalizeRule({ algorithm: 'sliding_window_log', limit, period });
    const L = BigInt(limit);
    let state = null;
    let now = M + rng.big(0n, 10n * s);
    const admitted = []; // the model: every admitted (at, cost)
    for (let i = 0; i < 300; i++) {
      if (!rng.chance(0.3)) now += rng.big(0n, period / 3n); // 30%: the same instant again
      const cost = rng.chance(0.05) ? limit + 1 : rng.chance(0.1) ? 0 : 1 + rng.int(Math.min(3, limit));
      const c = BigInt(cost || 1);
      // The model: units admitted in (now - period, now].
      const live = admitted.filter((e) => e.at > now - period);
      const used = live.reduce((a, e) => a + e.cost, 0n);
      const r = step(rule, state, now, cost);
      const d = r.decision;
      if (c > L) {
        assert.equal(d.allowed, false);
        assert.equal(d.retryAfter, RETRY_NEVER);
      } else if (used + c <= L) {
        assert.equal(d.allowed, true, `round ${round} op ${i}`);
        assert.equal(d.remaining, L - used - (cost === 0 ? 0n : c));
        if (cost > 0) admitted.push({ at: now, cost: c });
      } else {
        assert.equal(d.allowed, false, `round ${round} op ${i}`);
        assert.equal(d.remaining, L - used);
        // The model's retry: the first instant at which enough has expired.
        let need = used + c - L;
        let retry;
        for (const e of live) {
          need -= e.cost;
          if (need <= 0n) {
            retry = e.at + period - now;
            break;
          }
        }
        assert.equal(d.retryAfter, retry);
        // It is exact: one nanosecond earlier still fails, at retry it passes.
        if (retry > 1n) assert.equal(step(rule, state, now + retry - 1n, cost).decision.allowed, false);
        assert.equal(step(rule, state, now + retry, cost).decision.allowed, true);
      }
      state = r.state;
    }
    // The exactness property: in every interval (t - period, t] ending on an
    // admission, at most `limit` units were admitted.
    for (const e of admitted) {
      const inWindow = admitted.filter((x) => x.at > e.at - period && x.at <= e.at).reduce((a, x) => a + x.cost, 0n);
      assert.ok(inWindow <= L, `round ${round}: ${inWindow} > ${L} in the period ending at ${e.at}`);
    }
  }
});

test('sliding window log: state is never modified in place', () => {
  const rule = normalizeRule({ algorithm: 'sliding_window_log', limit: 5, period: '1s' });
  const { state } = run(rule, null, M, [1, 1, 1]);
  const snapshot = structuredClone(state);
  // Two different next states from the same state stay independent.
  const a = step(rule, state, M + 10n * ms, 1).state;
  const b = step(rule, state, M + 20n * ms, 2).state;
  assert.deepEqual(state, snapshot);
  assert.deepEqual(a.log.at(-1), { at: M + 10n * ms, cost: 1n });
  assert.deepEqual(b.log.at(-1), { at: M + 20n * ms, cost: 2n });
  // Expired entries are trimmed from the next state only.
  const c = step(rule, state, M + s, 1).state;
  assert.equal(c.log.length, 1);
  assert.equal(state.log.length, 3);
});

test('sliding window counter: weighted estimate of the previous window', () => {
  const rule = normalizeRule({ algorithm: 'sliding_window_counter', limit: 10, period: '1m' });
  // 8 requests in the window [M - 1m, M).
  let { state } = run(rule, null, M - 30n * s, Array(8).fill(1));
  assert.deepEqual([state.t, state.n, state.p], [M - m, 8n, 0n]);

  // At M + 20s, 40s of the previous window are still inside the sliding
  // minute: estimate = floor(8 * 40/60) + 0 = floor(5.33) = 5, so 5 remain.
  const now = M + 20n * s;
  assert.equal(step(rule, state, now, 0).decision.remaining, 5n);
  const r = run(rule, state, now, Array(6).fill(1));
  assert.deepEqual(
    r.decisions.map((d) => d.remaining),
    [4n, 3n, 2n, 1n, 0n, 0n],
  );
  assert.deepEqual([r.state.t, r.state.n, r.state.p], [M, 5n, 8n]);
  const denied = r.decisions[5];
  assert.equal(denied.allowed, false);
  // It passes once floor(8 * (60s - e)/60s) + 5 + 1 <= 10, i.e. once the
  // weighted previous count is 4: 8 * (60s - e)/60s < 5 <=> e > 22.5s. The
  // first such instant is 22.5s + 1ns into the window: 2.5s + 1ns from now.
  assert.equal(denied.retryAfter, 2_500_000_001n);
  // The current count leaves the sliding interval at the end of the next window.
  assert.equal(denied.resetAfter, 100n * s);
  assert.equal(step(rule, r.state, now + 2_500_000_000n, 1).decision.allowed, false);
  assert.equal(step(rule, r.state, now + 2_500_000_001n, 1).decision.allowed, true);

  // Next window, 30s in: prev = 5 (weighted by half: 2), curr = 0: 8 remain.
  const next = step(rule, r.state, M + m + 30n * s, 0);
  assert.equal(next.decision.remaining, 8n);
  // Two windows later, nothing is left of it.
  assert.equal(step(rule, r.state, M + 2n * m, 0).decision.remaining, 10n);
  assert.equal(expiresAt(rule, r.state), M + 2n * m);
});

test('sliding window counter: a full current window waits for the next one', () => {
  const rule = normalizeRule({ algorithm: 'sliding_window_counter', limit: 4, period: '1s' });
  // 4 at M + 500ms fill the current window; the 5th cannot pass in this
  // window (curr + cost > limit). In the next window it needs
  // floor(4 * (1s - e)/1s) + 1 <= 4, i.e. 4 * (1s - e) < 4s: any e > 0.
  const { state, decisions } = run(rule, null, M + 500n * ms, [1, 1, 1, 1, 1]);
  assert.equal(decisions[4].allowed, false);
  assert.equal(decisions[4].retryAfter, 500n * ms + 1n);
  assert.equal(step(rule, state, M + s, 1).decision.allowed, false);
  assert.equal(step(rule, state, M + s + 1n, 1).decision.allowed, true);
});

test('sliding window counter: the float64 weighing is kept bit-for-bit', () => {
  // Computed as Go and Lua do: float64(n) * float64(rem) / float64(p), then
  // truncated. With a 31-day period the product exceeds 2^53 and rounds, so
  // weighing 220393 by the whole period yields 220392, not 220393. Exact
  // integer arithmetic would differ here; every implementation must not.
  const p = 31n * 24n * h;
  assert.equal(weigh(220393n, p, p), 220392n);
  assert.equal(weigh(220392n, p, p), 220392n);
  assert.equal(weigh(8n, 40n * s, m), 5n);
  assert.equal(weigh(8n, 37_500_000_000n, m), 5n);
  assert.equal(weigh(8n, 37_499_999_999n, m), 4n);
  assert.equal(weigh(0n, p, p), 0n);
  assert.equal(weigh(5n, 0n, p), 0n);
});

test('a clock that goes backwards never grants capacity', () => {
  for (const algorithm of ['token_bucket', 'leaky_bucket', 'fixed_window', 'sliding_window_counter', 'sliding_window_log']) {
    const rule = normalizeRule({ algorithm, limit: 3, period: '1s' });
    // Exhaust the limit at M + 10s, then ask at earlier instants.
    const { state } = run(rule, null, M + 10n * s, [1, 1, 1]);
    for (const back of [1n, 500n * ms, 1n * s, 5n * s, 1n * h]) {
      const r = step(rule, state, M + 10n * s - back, 1);
      assert.equal(r.decision.allowed, false, `${algorithm} back ${back}`);
      assert.equal(r.decision.remaining, 0n, `${algorithm} back ${back}`);
      assert.ok(r.decision.retryAfter >= back, `${algorithm}: retry ${r.decision.retryAfter} must cover the ${back}ns lost`);
    }
    // Partially used: with 2 consumed at M + 10s, going back to M + 5s
    // leaves at most the 1 unit that was left. The windows keep counting the
    // later window (1 passes); the buckets see a TAT 5.67s ahead of now, an
    // empty bucket (none passes).
    const two = run(rule, null, M + 10n * s, [1, 1]).state;
    const back = run(rule, two, M + 5n * s, [1, 1]);
    const bucket = algorithm.endsWith('bucket');
    assert.deepEqual(
      back.decisions.map((d) => d.allowed),
      bucket ? [false, false] : [true, false],
      algorithm,
    );
  }
});

test('a bucket state records the latest instant it was written at (p)', () => {
  const ten = normalizeRule({ name: 'r', algorithm: 'token_bucket', limit: 10, period: '1s' });
  const one = normalizeRule({ name: 'r', algorithm: 'token_bucket', limit: 1, period: '1s' });
  let r = step(ten, null, M, 2);
  assert.deepEqual({ t: r.state.t, n: r.state.n, p: r.state.p }, { t: M + 200n * ms, n: 100n * ms, p: M });
  // A consumption at an earlier instant keeps the later p.
  r = step(ten, r.state, M - 500n * ms, 1);
  assert.equal(r.decision.allowed, true);
  assert.deepEqual({ t: r.state.t, p: r.state.p }, { t: M + 300n * ms, p: M });
  // A denial, a peek, a consumption later on: p moves only with a write.
  const used = r.state;
  assert.equal(step(ten, used, M + 2n * s, 0).state, used);
  assert.equal(step(ten, used, M, 11).state, used);
  assert.equal(step(ten, used, M + 2n * s, 1).state.p, M + 2n * s);
  // A rescale met 400ms before p is measured from p: 300ms at 10/s is 3s at
  // 1/s (not 7s, from 700ms), and the rescaled state is written at p.
  r = step(one, used, M - 400n * ms, 0);
  assert.equal(r.changed, true);
  assert.deepEqual({ t: r.state.t, n: r.state.n, p: r.state.p }, { t: M + 3n * s, n: s, p: M });
  // Met after p, it is measured from now and written at now.
  r = step(one, used, M + 100n * ms, 0);
  assert.deepEqual({ t: r.state.t, n: r.state.n, p: r.state.p }, { t: M + 100n * ms + 2n * s, n: s, p: M + 100n * ms });
  // A TAT not after p (a debt that rescaled to nothing) needs no rescale,
  // however far back the clock is; it is still ahead of that clock.
  const owed = { alg: 'token_bucket', t: M, n: 100n * ms, p: M, log: [] };
  r = step(one, owed, M - 2n * s, 0);
  assert.equal(r.changed, false);
  assert.equal(r.state, owed);
  assert.equal(r.decision.remaining, 0n, 'TAT 2s ahead of now at 1/s: the bucket of 1 is empty');
});

test('a state written by another algorithm is treated as fresh', () => {
  const fw = normalizeRule({ name: 'r', algorithm: 'fixed_window', limit: 2, period: '1m' });
  const tb = normalizeRule({ name: 'r', algorithm: 'token_bucket', limit: 2, period: '1m' });
  const { state } = run(fw, null, M, [1, 1]);
  assert.equal(step(fw, state, M, 1).decision.allowed, false);
  const r = step(tb, state, M, 1);
  assert.equal(r.decision.allowed, true);
  assert.equal(r.decision.remaining, 1n);
  assert.equal(r.state.alg, 'token_bucket');
  assert.equal(expiresAt(tb, state), 0n);
});

test('apply is all-or-nothing: a deny by one rule leaves the others untouched', () => {
  const rules = [
    normalizeRule({ name: 'per-second', algorithm: 'token_bucket', limit: 10, period: '1s' }),
    normalizeRule({ name: 'per-minute', algorithm: 'fixed_window', limit: 2, period: '1m' }),
  ];
  const states = [null, null];
  const t = M + 15n * s;
  for (const want of [9n, 8n]) {
    const { verdict: v, changed } = apply(rules, states, t, 1);
    assert.equal(v.allowed, true);
    assert.equal(changed, true);
    assert.equal(v.decisions[0].remaining, want);
  }
  const before = [...states];
  const { verdict: v, changed } = apply(rules, states, t, 1);
  assert.equal(v.allowed, false);
  assert.equal(changed, false, 'a denial without a rate change saves nothing');
  assert.deepEqual(states, before);
  assert.equal(states[0], before[0], 'the token bucket state is the same object');
  // The token bucket would have admitted it; it reports an unconsumed peek.
  assert.equal(v.decisions[0].allowed, true);
  assert.equal(v.decisions[0].remaining, 8n);
  assert.equal(v.decisions[1].allowed, false);
  assert.equal(v.decisions[1].retryAfter, 45n * s);
  assert.equal(v.retryAfter, 45n * s);
  assert.equal(binding(v), 1);
  // Repeating the denied request many times costs the bucket nothing.
  for (let i = 0; i < 50; i++) apply(rules, states, t, 1);
  assert.equal(apply(rules, states, t, 0).verdict.decisions[0].remaining, 8n);

  // A cost above one rule's capacity: never, whatever the others say.
  const { verdict: never } = apply(rules, [null, null], t, 3);
  assert.equal(never.allowed, false);
  assert.equal(never.retryAfter, RETRY_NEVER);
  assert.equal(binding(never), 1);
  assert.equal(never.decisions[0].remaining, 10n, 'a peek: nothing consumed');
});

test('apply: a denied set keeps the rescale of an admitting rule, and consumes nothing', () => {
  const window = normalizeRule({ name: 'w', algorithm: 'fixed_window', limit: 1, period: '1m' });
  const before = [normalizeRule({ name: 'b', algorithm: 'token_bucket', limit: 10, period: '1s' }), window];
  const after = [normalizeRule({ name: 'b', algorithm: 'token_bucket', limit: 20, period: '1s' }), window];
  const states = [null, null];
  const t = M + 15n * s;
  assert.equal(apply(before, states, t, 1).verdict.allowed, true); // bucket TAT t + 100ms
  const [bucket, counted] = states;
  // Raised to 20/s: the bucket would admit (it rescales 100ms of debt to 50ms),
  // the window denies. The bucket reports a peek and saves only the rescale.
  const { verdict: v, changed } = apply(after, states, t, 1);
  assert.equal(v.allowed, false);
  assert.equal(changed, true);
  assert.equal(v.decisions[0].allowed, true);
  assert.equal(v.decisions[0].remaining, 19n, 'a peek: the rescaled unit is owed, nothing more');
  assert.equal(v.decisions[0].resetAfter, 50n * ms);
  assert.deepEqual({ t: states[0].t, n: states[0].n }, { t: t + 50n * ms, n: 50n * ms });
  assert.notEqual(states[0], bucket);
  assert.deepEqual({ t: bucket.t, n: bucket.n }, { t: t + 100n * ms, n: 100n * ms }, 'state objects are never modified');
  assert.equal(states[1], counted, 'the denying rule is untouched');
  // Now at the new rate: a second denial changes nothing.
  const again = apply(after, states, t, 1);
  assert.equal(again.changed, false);
  assert.equal(again.verdict.decisions[0].remaining, 19n);
  // step reports the same: a peek that rescales is changed, its state saved.
  const peek = step(after[0], bucket, t, 0);
  assert.equal(peek.changed, true);
  assert.deepEqual({ t: peek.state.t, n: peek.state.n }, { t: t + 50n * ms, n: 50n * ms });
  // A TAT already in the past needs no rescale: a full bucket at any rate.
  const idle = step(after[0], bucket, t + s, 0);
  assert.equal(idle.changed, false);
  assert.equal(idle.state, bucket);
  assert.equal(idle.decision.remaining, 20n);
});

test('apply: retryAfter is the longest wait, delay the longest delay, binding the tightest rule', () => {
  const rules = [
    normalizeRule({ name: 'a', algorithm: 'fixed_window', limit: 1, period: '1s' }),
    normalizeRule({ name: 'b', algorithm: 'fixed_window', limit: 1, period: '1m' }),
    normalizeRule({ name: 'c', algorithm: 'leaky_bucket', limit: 10, period: '1s' }),
  ];
  const states = [null, null, null];
  const { verdict: first } = apply(rules, states, M, 1);
  assert.equal(first.allowed, true);
  assert.equal(first.delay, 0n);
  // Both windows deny: the set waits for the longer one.
  const { verdict: v } = apply(rules, states, M, 1);
  assert.equal(v.allowed, false);
  assert.equal(v.decisions[0].retryAfter, s);
  assert.equal(v.decisions[1].retryAfter, m);
  assert.equal(v.retryAfter, m);
  assert.equal(binding(v), 1);
  assert.equal(v.delay, 0n);

  // Allowed: binding is the rule with the fewest remaining.
  const wide = [
    normalizeRule({ name: 'x', algorithm: 'leaky_bucket', limit: 10, period: '1s' }),
    normalizeRule({ name: 'y', algorithm: 'fixed_window', limit: 5, period: '1m' }),
    normalizeRule({ name: 'z', algorithm: 'leaky_bucket', limit: 4, period: '1s' }),
  ];
  const st = [null, null, null];
  apply(wide, st, M, 1);
  const { verdict: v2 } = apply(wide, st, M, 1);
  assert.equal(v2.allowed, true);
  assert.deepEqual(v2.decisions.map((d) => d.remaining), [8n, 3n, 2n]);
  assert.equal(binding(v2), 2);
  // Leaky delays: x = 100ms per unit, z = 250ms per unit; one unit queued.
  assert.equal(v2.delay, 250n * ms);

  assert.throws(() => apply(wide, [null], M, 1), RangeError);
  assert.throws(() => apply(wide, st, M, -1), RangeError);
  assert.throws(() => step(wide[0], null, 5, 1), TypeError);
});

test('cross-check: a scripted scenario with hand-derived numbers', () => {
  // The limit set of an "orders" endpoint:
  //   burst:  token bucket, 2 per second, bucket of 4
  //           -> I = 500ms, tau = 2s
  //   minute: fixed window, 6 per minute, aligned on the minute M
  const rules = [
    normalizeRule({ name: 'burst', algorithm: 'token_bucket', limit: 2, period: '1s', burst: 4 }),
    normalizeRule({ name: 'minute', algorithm: 'fixed_window', limit: 6, period: '1m' }),
  ];
  const states = [null, null];
  const at = (sec, extraNs = 0n) => M + BigInt(Math.round(sec * 1000)) * ms + extraNs;
  const steps = [
    // t=10s cost 1. burst: TAT 10.5s, (2s - 0.5s)/0.5s = 3 left.
    // minute: count 1, 5 left, resets at 60s.
    { t: at(10), cost: 1, allowed: true, retry: 0n, rem: [3n, 5n], reset: [500n * ms, 50n * s], bind: 0 },
    // t=10s cost 3. burst: TAT 10.5 -> 12s, 12 - 10 = 2s = tau: 0 left.
    // minute: count 4, 2 left.
    { t: at(10), cost: 3, allowed: true, retry: 0n, rem: [0n, 2n], reset: [2n * s, 50n * s], bind: 0 },
    // t=10s cost 1. burst: 12.5 - 10 = 2.5s > tau: retry 12.5 - 2 - 10 = 0.5s.
    // minute would pass (4 + 1 <= 6) and reports a peek: 2 left.
    { t: at(10), cost: 1, allowed: false, retry: 500n * ms, rem: [0n, 2n], reset: [2n * s, 50n * s], bind: 0 },
    // t=10.5s cost 1. burst: TAT 12 -> 12.5, 12.5 - 10.5 = 2s: 0 left.
    // minute: count 5, 1 left.
    { t: at(10.5), cost: 1, allowed: true, retry: 0n, rem: [0n, 1n], reset: [2n * s, 49_500n * ms], bind: 0 },
    // t=11.5s cost 2. burst: TAT 12.5 -> 13.5, 2s: passes.
    // minute: 5 + 2 = 7 > 6: denied until the window ends, 48.5s.
    // burst reports a peek: (2s - (12.5 - 11.5)s) / 0.5s = 2 left, reset 1s.
    { t: at(11.5), cost: 2, allowed: false, retry: 48_500n * ms, rem: [2n, 1n], reset: [1n * s, 48_500n * ms], bind: 1 },
    // t=11.5s cost 1. burst: TAT 12.5 -> 13, 1.5s: (2 - 1.5)/0.5 = 1 left.
    // minute: count 6, 0 left: binding (fewest remaining) is the minute.
    { t: at(11.5), cost: 1, allowed: true, retry: 0n, rem: [1n, 0n], reset: [1_500n * ms, 48_500n * ms], bind: 1 },
    // 1ns before the minute ends: the bucket is full (4 left, nothing to
    // reset), the window is full: retry in 1ns.
    { t: at(60, -1n), cost: 1, allowed: false, retry: 1n, rem: [4n, 0n], reset: [0n, 1n], bind: 1 },
    // On the minute: a new window. burst: TAT now + 0.5s, 3 left.
    // minute: count 1 in [60s, 120s), 5 left.
    { t: at(60), cost: 1, allowed: true, retry: 0n, rem: [3n, 5n], reset: [500n * ms, 60n * s], bind: 0 },
    // Cost 7 exceeds both capacities (bucket 4, window 6): never. Both
    // decisions are denials with RETRY_NEVER; binding keeps the first.
    { t: at(60), cost: 7, allowed: false, retry: RETRY_NEVER, rem: [3n, 5n], reset: [500n * ms, 60n * s], bind: 0 },
    // Cost 5: only the bucket's capacity is exceeded: still never.
    { t: at(60), cost: 5, allowed: false, retry: RETRY_NEVER, rem: [3n, 5n], reset: [500n * ms, 60n * s], bind: 0 },
  ];
  steps.forEach((want, i) => {
    const { verdict: v } = apply(rules, states, want.t, want.cost);
    const got = {
      allowed: v.allowed,
      retry: v.retryAfter,
      rem: v.decisions.map((d) => d.remaining),
      reset: v.decisions.map((d) => d.resetAfter),
      bind: binding(v),
    };
    const { t, cost, ...expected } = want;
    assert.deepEqual(got, expected, `step ${i} (t=${(t - M) / ms}ms cost ${cost})`);
  });
  assert.deepEqual(states[0].t, at(60.5));
  assert.deepEqual([states[1].t, states[1].n], [M + m, 1n]);
});

test('combine aggregates decisions as apply does', () => {
  const d = (allowed, retryAfter = 0n, delay = 0n) => ({ allowed, limit: 1n, remaining: 0n, resetAfter: 0n, retryAfter, delay });
  assert.deepEqual(
    combine([d(true, 0n, 5n), d(true, 0n, 9n)]),
    { allowed: true, retryAfter: 0n, delay: 9n, decisions: [d(true, 0n, 5n), d(true, 0n, 9n)] },
  );
  assert.equal(combine([d(true, 0n, 5n), d(false, 3n), d(false, 7n)]).retryAfter, 7n);
  assert.equal(combine([d(false, 3n), d(false, RETRY_NEVER), d(false, 7n)]).retryAfter, RETRY_NEVER);
  assert.equal(combine([d(false, 3n)]).delay, 0n);
  assert.deepEqual(combine([]), { allowed: true, retryAfter: 0n, delay: 0n, decisions: [] });
});

test('a fixed window may last a year; other algorithms at most 31 days', () => {
  const year = 365n * 24n * NS.h;
  assert.equal(normalizeRule({ name: 'y', algorithm: 'fixed_window', limit: 5, period: year }).period, year);
  assert.throws(() => normalizeRule({ name: 'y', algorithm: 'token_bucket', limit: 5, period: year }), InvalidRuleError);
  assert.throws(() => normalizeRule({ name: 'y', algorithm: 'fixed_window', limit: 5, period: 367n * 24n * NS.h }), InvalidRuleError);
});
