// The Go package's own tests, for the JavaScript port: the timeline tables
// come from the file Go's TestTimelines reads (limit/testdata/timelines.json),
// so both run the same rows; the other cases mirror limit/step_test.go and
// limit/property_test.go. The port must produce the exact same decisions.

import test from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NS, RETRY_NEVER, MAX_DEBT, MAX_PERIOD, normalizeRule, step, apply, binding, expiresAt, capacity, InvalidRuleError } from '../src/limit.js';

const { ms, s, m, h } = NS;
const never = RETRY_NEVER;

// t0 is 2026-01-01T00:00:00Z, aligned to the hour (and so to every window).
const t0 = BigInt(Date.UTC(2026, 0, 1)) * ms;

/**
 * A span of testdata/timelines.json in nanoseconds: Go duration terms joined
 * by + or - ("2h - 1ns"), or "never".
 */
function span(text) {
  if (text === undefined) return 0n;
  if (text === 'never') return never;
  const units = { ns: 1n, us: 1000n, ms, s, m, h };
  let total = 0n;
  let sign = 1n;
  for (const f of text.split(/\s+/)) {
    if (f === '+' || f === '-') {
      sign = f === '+' ? 1n : -1n;
      continue;
    }
    const match = /^(\d+)(ns|us|ms|s|m|h)?$/.exec(f);
    assert.ok(match && (match[2] || match[1] === '0'), `span ${JSON.stringify(text)}: bad term ${f}`);
    total += sign * BigInt(match[1]) * (match[2] ? units[match[2]] : 1n);
  }
  return total;
}

/**
 * One request per row: at t0 + at, `cost` units, and the exact decision
 * expected. A denied request or a peek must leave the state as it was.
 */
function timeline(spec, rows) {
  const rule = normalizeRule(spec);
  let state = null;
  rows.forEach((w, i) => {
    const r = step(rule, state, t0 + span(w.at), w.cost);
    const want = {
      allowed: w.allowed,
      limit: rule.limit,
      remaining: BigInt(w.remaining),
      resetAfter: span(w.reset),
      retryAfter: span(w.retry),
      delay: span(w.delay),
    };
    assert.deepEqual(r.decision, want, `row ${i} (at ${w.at} cost ${w.cost})`);
    if (!r.decision.allowed || w.cost === 0) {
      assert.equal(r.state, state, `row ${i}: a denied request or a peek changed the state`);
    }
    assert.equal(r.changed, r.decision.allowed && w.cost !== 0, `row ${i}: changed`);
    state = r.state;
  });
}

// The Go tests' timeline tables, read from the one file both run.
const tables = JSON.parse(
  readFileSync(path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../limit/testdata/timelines.json'), 'utf8'),
);

test('the Go timeline tables are all here', () => {
  assert.equal(tables.timelines.length, 6);
  assert.equal(tables.timelines.reduce((n, tl) => n + tl.rows.length, 0), 57);
});

for (const tl of tables.timelines) {
  test(`Go TestTimelines/${tl.name}: ${tl.about}`, () => {
    const { name, algorithm, limit, period, burst } = tl.rule;
    timeline({ name, algorithm, limit, period: span(period), ...(burst ? { burst } : {}) }, tl.rows);
  });
}

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
