// Seeded randomized properties, the contracts of limit/property_test.go:
// for every decision, Remaining and RetryAfter are exact, peeks and denials
// change nothing; and over whole timelines, each algorithm keeps its promise.

import test from 'node:test';
import assert from 'node:assert/strict';
import { NS, RETRY_NEVER, ALGORITHMS, normalizeRule, step, apply, capacity, interval } from '../src/limit.js';
import { Prng } from '../test-support/prng.js';

const t0 = BigInt(Date.UTC(2026, 0, 1)) * NS.ms;
const ROUNDS = 150;

/** A valid rule with small numbers, so that random timelines exhaust it often. */
function genRule(rng, algorithm) {
  const spec = {
    name: 'p',
    algorithm,
    limit: 1 + rng.int(20),
    period: BigInt(1 + rng.int(5000)) * NS.ms,
  };
  if (algorithm === 'token_bucket' || algorithm === 'leaky_bucket') spec.burst = 1 + rng.int(30);
  return normalizeRule(spec);
}

/**
 * Feeds random requests to `rule` (time moving forward by up to a period, at
 * times not at all), checks the contracts of every decision and returns what
 * was admitted.
 */
function timeline(rng, rule, ctx) {
  const cap = capacity(rule);
  let now = t0 + rng.big(0n, NS.h);
  let state = null;
  const admitted = [];
  const steps = 1 + rng.int(120);
  for (let i = 0; i < steps; i++) {
    if (rng.chance(0.5)) now += rng.big(0n, rule.period);
    const cost = rng.big(0n, cap + 1n);
    const where = `${ctx} step ${i}`;
    const { state: next, decision: d } = step(rule, state, now, cost);
    if (cost > cap) {
      assert.ok(!d.allowed && d.retryAfter === RETRY_NEVER, `${where}: cost ${cost} over capacity ${cap}`);
    }
    assert.ok(d.remaining >= 0n && d.remaining <= cap, `${where}: remaining ${d.remaining} outside [0, ${cap}]`);
    if (!d.allowed && d.retryAfter !== RETRY_NEVER) {
      const c = cost > 0n ? cost : 1n;
      assert.ok(d.retryAfter > 0n, `${where}: denied with retryAfter ${d.retryAfter}`);
      assert.equal(step(rule, state, now + d.retryAfter, c).decision.allowed, true, `${where}: denied again after retryAfter`);
      assert.equal(step(rule, state, now + d.retryAfter - 1n, c).decision.allowed, false, `${where}: allowed 1ns before retryAfter`);
    }
    if (d.allowed && cost > 0n) {
      admitted.push({ at: now, cost });
      state = next;
    } else {
      assert.equal(next, state, `${where}: a peek or a denial changed the state`);
    }
    // Remaining is exact: that cost passes now, one more unit does not.
    if (d.remaining > 0n) {
      assert.equal(step(rule, state, now, d.remaining).decision.allowed, true, `${where}: remaining ${d.remaining} denied`);
    }
    if (d.remaining < cap) {
      assert.equal(step(rule, state, now, d.remaining + 1n).decision.allowed, false, `${where}: more than remaining passes`);
    }
  }
  return admitted;
}

test('property: token and leaky bucket never exceed burst + elapsed/I', () => {
  const rng = new Prng(1001);
  for (const algorithm of ['token_bucket', 'leaky_bucket']) {
    for (let round = 0; round < ROUNDS; round++) {
      const rule = genRule(rng, algorithm);
      const got = timeline(rng, rule, `${algorithm} round ${round}`);
      for (let i = 0; i < got.length; i++) {
        let sum = 0n;
        for (let j = i; j < got.length; j++) {
          sum += got[j].cost;
          const allowance = rule.burst + (got[j].at - got[i].at) / interval(rule);
          assert.ok(sum <= allowance, `admitted ${sum} units, the promise is ${allowance}`);
        }
      }
    }
  }
});

test('property: sliding window log admits at most limit in any period', () => {
  const rng = new Prng(1002);
  for (let round = 0; round < ROUNDS; round++) {
    const rule = genRule(rng, 'sliding_window_log');
    const got = timeline(rng, rule, `round ${round}`);
    for (let j = 0; j < got.length; j++) {
      let sum = 0n;
      for (let i = j; i >= 0 && got[i].at > got[j].at - rule.period; i--) sum += got[i].cost;
      assert.ok(sum <= rule.limit, `${sum} units in the period ending at entry ${j}, limit ${rule.limit}`);
    }
  }
});

test('property: windows hold at most limit; the counter at most 2*limit per sliding period', () => {
  const rng = new Prng(1003);
  for (const algorithm of ['fixed_window', 'sliding_window_counter']) {
    for (let round = 0; round < ROUNDS; round++) {
      const rule = genRule(rng, algorithm);
      const got = timeline(rng, rule, `${algorithm} round ${round}`);
      const p = rule.period;
      const per = new Map();
      for (const e of got) {
        const w = e.at / p; // instants are positive: / is floor division
        per.set(w, (per.get(w) ?? 0n) + e.cost);
        assert.ok(per.get(w) <= rule.limit, `window ${w} holds ${per.get(w)}, limit ${rule.limit}`);
      }
      if (algorithm === 'sliding_window_counter') {
        for (let j = 0; j < got.length; j++) {
          let sum = 0n;
          for (let i = j; i >= 0 && got[i].at > got[j].at - p; i--) sum += got[i].cost;
          assert.ok(sum <= 2n * rule.limit, `${sum} units in one period, limit ${rule.limit}`);
        }
      }
    }
  }
});

test('property: a clock that jumps back never raises remaining', () => {
  const rng = new Prng(1004);
  for (let round = 0; round < 5 * ROUNDS; round++) {
    const rule = genRule(rng, rng.pick(ALGORITHMS));
    let now = t0;
    let state = null;
    for (let i = 1 + rng.int(40); i > 0; i--) {
      now += rng.big(0n, rule.period / 4n);
      state = step(rule, state, now, 1).state;
    }
    const back = now - rng.big(1n, 3n * rule.period);
    const here = step(rule, state, now, 0).decision;
    const there = step(rule, state, back, 0).decision;
    assert.ok(
      there.remaining <= here.remaining,
      `${rule.algorithm}: stepping back ${now - back}ns raised remaining from ${here.remaining} to ${there.remaining}`,
    );
  }
});

// Go TestPropertyRetryExactAcrossRateChanges: random rate changes between
// requests keep retryAfter exact for callers that save states as apply says
// (when `changed`, including on denials and peeks that rescaled).
test('property: retryAfter stays exact across rate changes', () => {
  const rng = new Prng(1005);
  for (let round = 0; round < 2 * ROUNDS; round++) {
    const algorithm = rng.pick(['token_bucket', 'leaky_bucket']);
    const rules = [0, 1, 2].map(() => ({ ...genRule(rng, algorithm), name: 'same' }));
    const states = [null];
    let now = t0;
    for (let i = 1 + rng.int(60); i > 0; i--) {
      const rule = rng.pick(rules);
      now += rng.big(0n, rule.period);
      const cost = rng.big(0n, rule.burst);
      const before = states[0];
      const { verdict: v, changed } = apply([rule], states, now, cost);
      const where = `round ${round}: ${rule.limit}/${rule.period}ns burst ${rule.burst} at +${now - t0}ns cost ${cost}`;
      assert.equal(changed, states[0] !== before, `${where}: changed must say whether the state was replaced`);
      if (!v.allowed && v.retryAfter > 0n) {
        const c = cost > 0n ? cost : 1n;
        assert.equal(apply([rule], [...states], now + v.retryAfter, c).verdict.allowed, true, `${where}: denied again at retryAfter ${v.retryAfter}`);
        assert.equal(apply([rule], [...states], now + v.retryAfter - 1n, c).verdict.allowed, false, `${where}: allowed 1ns before retryAfter ${v.retryAfter}`);
      }
    }
  }
});

// Go TestRaisedRateWithClockBackGrantsNothing, generalized. A history with the
// clock moving forward, random rates and costs leaves a bucket state last
// written at `now`. Then the clock steps back: peeks and denials under random
// rates at instants up to 3 periods before `now` (each saving its rescale, as
// apply says), compared with the same requests on a clock that stood still at
// `now`; then the clock catches up and both timelines see the same peeks. The
// stepped-back one never has more remaining, at any of them.
test('property: a stepped-back clock with random rate changes never yields more remaining than a clock that stood still', () => {
  const rng = new Prng(1006);
  let rescales = 0;
  for (let round = 0; round < 3 * ROUNDS; round++) {
    const algorithm = rng.pick(['token_bucket', 'leaky_bucket']);
    const rules = [0, 1, 2].map(() => ({ ...genRule(rng, algorithm), name: 'same' }));
    const longest = rules.reduce((a, r) => (r.period > a ? r.period : a), 0n);
    let at = t0;
    let now = t0; // the instant of the last write
    let state = null;
    for (let i = 1 + rng.int(30); i > 0; i--) {
      const rule = rng.pick(rules);
      at += rng.big(0n, rule.period / 2n);
      const r = step(rule, state, at, rng.big(0n, rule.burst));
      if (r.changed) {
        state = r.state;
        now = at;
      }
    }
    let back = state;
    let still = state;
    const compare = (rule, whenBack, whenStill, cost, where) => {
      const a = step(rule, back, whenBack, cost);
      const b = step(rule, still, whenStill, cost);
      assert.ok(
        a.decision.remaining <= b.decision.remaining,
        `round ${round} ${where}: ${rule.limit}/${rule.period}ns burst ${rule.burst}, cost ${cost}: ` +
          `remaining ${a.decision.remaining} at +${whenBack - t0}ns after stepping back, ${b.decision.remaining} at +${whenStill - t0}ns`,
      );
      assert.ok(!(a.decision.allowed && cost > 0n), 'only peeks and denials here');
      if (a.changed) {
        back = a.state;
        rescales++;
      }
      if (b.changed) still = b.state;
    };
    for (let i = 1 + rng.int(6); i > 0; i--) {
      const rule = rng.pick(rules);
      const when = rng.chance(0.1) ? now : now - rng.big(1n, 3n * longest);
      compare(rule, when, now, rng.chance(0.7) ? 0n : rule.burst + 1n, `back ${now - when}ns`);
    }
    let later = now;
    for (let i = 1 + rng.int(6); i > 0; i--) {
      const rule = rng.pick(rules);
      later += rng.big(0n, rule.period);
      compare(rule, later, later, 0n, `caught up`);
    }
  }
  assert.ok(rescales > ROUNDS, `only ${rescales} stepped-back requests rescaled a state`);
});
