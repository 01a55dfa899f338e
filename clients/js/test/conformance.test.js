// Conformance with the specification itself: when this package sits in the
// DistributedRateLimiter repository and a Go toolchain is on PATH, this test
// builds a tiny Go program against the repository's `limit` package, feeds it
// the same seeded random scenarios as the JavaScript port, and requires
// identical results: every decision, verdict and next state, and the same
// accept/reject answer of normalizeRule, and the same `changed` (whether the
// states must be saved). States are compared field by field, p included: for
// the buckets the latest instant they were written at, which anchors a
// rescale met by a clock that stepped back. The tests are not published
// (package.json "files"), so they always run inside the repository; without
// a Go toolchain on PATH they fail with what to install, never skip: a
// conformance check that silently does not run checks nothing.

import test from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ALGORITHMS,
  MAX_DEBT,
  MAX_PERIOD,
  NS,
  apply,
  binding,
  capacity,
  expiresAtSet,
  interval,
  normalizeRule,
  InvalidRuleError,
} from '../src/limit.js';
import { Prng } from '../test-support/prng.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const goMod = path.join(repoRoot, 'go.mod');
const goSpec = path.join(repoRoot, 'limit', 'step.go');

/** Fails the test with what is missing unless Go can build ../../limit. */
function requireGo() {
  assert.ok(existsSync(goMod) && existsSync(goSpec), `the conformance test runs inside the repository: no ${goSpec}`);
  const r = spawnSync('go', ['version'], { encoding: 'utf8' });
  assert.ok(!r.error && r.status === 0, 'the conformance test builds ../../limit with Go: install Go (go.mod names the version, https://go.dev/dl) and put it on PATH');
}

const GO_MAIN = String.raw`package main

import (
	"encoding/json"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

type ruleIn struct {
	Name      string
	Algorithm string
	Limit     string
	Period    string
	Burst     string
}

type op struct {
	Now, Cost string
	Set       int
}

type scenario struct {
	Sets [][]ruleIn
	Ops  []op
}

type input struct {
	Normalize []ruleIn
	Scenarios []scenario
}

func i64(s string) int64 {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		panic(err)
	}
	return v
}

func str(v int64) string { return strconv.FormatInt(v, 10) }

func toRule(r ruleIn) (limit.Rule, error) {
	alg, err := limit.ParseAlgorithm(r.Algorithm)
	if err != nil {
		return limit.Rule{}, err
	}
	return limit.Rule{Name: r.Name, Algorithm: alg, Limit: i64(r.Limit), Period: time.Duration(i64(r.Period)), Burst: i64(r.Burst)}.Normalize()
}

func field(err error) string {
	if errors.Is(err, limit.ErrUnknownAlgorithm) {
		return "algorithm"
	}
	msg := strings.TrimPrefix(err.Error(), limit.ErrInvalidRule.Error()+": ")
	f, _, _ := strings.Cut(msg, ":")
	return f
}

func decision(d limit.Decision) map[string]any {
	return map[string]any{
		"allowed": d.Allowed, "limit": str(d.Limit), "remaining": str(d.Remaining),
		"resetAfter": str(int64(d.ResetAfter)), "retryAfter": str(int64(d.RetryAfter)), "delay": str(int64(d.Delay)),
	}
}

func state(s limit.State) map[string]any {
	alg := ""
	if s.Alg != 0 {
		alg = s.Alg.String()
	}
	log := []string{}
	for _, e := range s.Log {
		log = append(log, str(e.At)+"/"+str(e.Cost))
	}
	return map[string]any{"alg": alg, "t": str(s.T), "n": str(s.N), "p": str(s.P), "log": log}
}

func main() {
	// The input is a file (os.Args[1]), not stdin: if this program fails to
	// build, go run exits without reading, and the test reports its stderr.
	f, err := os.Open(os.Args[1])
	if err != nil {
		panic(err)
	}
	var in input
	if err := json.NewDecoder(f).Decode(&in); err != nil {
		panic(err)
	}
	f.Close()
	out := map[string]any{}
	var norm []map[string]any
	for _, r := range in.Normalize {
		n, err := toRule(r)
		if err != nil {
			norm = append(norm, map[string]any{"ok": false, "field": field(err)})
			continue
		}
		norm = append(norm, map[string]any{"ok": true, "algorithm": n.Algorithm.String(), "burst": str(n.Burst), "capacity": str(n.Capacity())})
	}
	out["normalize"] = norm
	var scen [][]map[string]any
	for _, sc := range in.Scenarios {
		sets := make([][]limit.Rule, len(sc.Sets))
		for k, set := range sc.Sets {
			for _, r := range set {
				n, err := toRule(r)
				if err != nil {
					panic(err)
				}
				sets[k] = append(sets[k], n)
			}
		}
		states := make([]limit.State, len(sets[0]))
		var steps []map[string]any
		for _, o := range sc.Ops {
			rules := sets[o.Set]
			// As a store does (memstore): apply to a loaded copy, save it only
			// when Apply says so. (Apply may reset a state of another
			// algorithm to a fresh, equivalent one in place without
			// reporting it.)
			work := append([]limit.State(nil), states...)
			v, changed := limit.Apply(rules, work, i64(o.Now), i64(o.Cost))
			if changed {
				states = work
			}
			var ds, ss []map[string]any
			for _, d := range v.Decisions() {
				ds = append(ds, decision(d))
			}
			for _, s := range states {
				ss = append(ss, state(s))
			}
			steps = append(steps, map[string]any{
				"allowed": v.Allowed, "changed": changed, "retryAfter": str(int64(v.RetryAfter)), "delay": str(int64(v.Delay)),
				"binding": v.Binding(), "decisions": ds, "states": ss, "expiresAt": str(limit.ExpiresAt(rules, states)),
			})
		}
		scen = append(scen, steps)
	}
	out["scenarios"] = scen
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		panic(err)
	}
}
`;

/**
 * Builds and runs a Go program (`source`, by default the one above) against
 * the repository's `limit` package with `input` as its argument, and returns
 * its decoded output. The input goes through a file in the temporary
 * directory rather than stdin: a program that fails to compile makes go run
 * exit before reading anything, and a pipe would then fail with EPIPE and
 * hide the compiler's message. Any failure throws with go's stderr.
 */
function runGo(input, source = GO_MAIN) {
  const dir = mkdtempSync(path.join(tmpdir(), 'drl-conformance-'));
  try {
    const goLine = readFileSync(goMod, 'utf8').match(/^go\s+(\S+)/m)?.[1] ?? '1.22';
    writeFileSync(
      path.join(dir, 'go.mod'),
      `module conformance\n\ngo ${goLine}\n\nrequire github.com/distributedratelimiter/ratelimiter v0.0.0\n\nreplace github.com/distributedratelimiter/ratelimiter => ${JSON.stringify(repoRoot)}\n`,
    );
    writeFileSync(path.join(dir, 'main.go'), source);
    // The repository's dependencies, verified against its own checksums.
    const goSum = path.join(repoRoot, 'go.sum');
    if (existsSync(goSum)) writeFileSync(path.join(dir, 'go.sum'), readFileSync(goSum));
    const inputFile = path.join(dir, 'input.json');
    writeFileSync(inputFile, JSON.stringify(input));
    const r = spawnSync('go', ['run', '.', inputFile], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      encoding: 'utf8',
      maxBuffer: 256 * 1024 * 1024,
      env: { ...process.env, GOWORK: 'off', GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local' },
    });
    const stderr = (r.stderr ?? '').trim();
    if (r.error) throw new Error(`go run failed: ${r.error.message}${stderr ? `\n--- go stderr ---\n${stderr}` : ''}`, { cause: r.error });
    if (r.status !== 0) {
      throw new Error(`go run failed (exit ${r.status ?? r.signal}); the Go program or the limit package does not build or run:\n--- go stderr ---\n${stderr}`);
    }
    try {
      return JSON.parse(r.stdout);
    } catch (err) {
      throw new Error(`go run printed no JSON (${err.message}):\n--- go stderr ---\n${stderr}`, { cause: err });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const str = (v) => String(v);
const SCENARIOS = 200;

function decisionOut(d) {
  return {
    allowed: d.allowed,
    limit: str(d.limit),
    remaining: str(d.remaining),
    resetAfter: str(d.resetAfter),
    retryAfter: str(d.retryAfter),
    delay: str(d.delay),
  };
}

function stateOut(s) {
  if (!s) return { alg: '', t: '0', n: '0', p: '0', log: [] };
  return { alg: s.alg ?? '', t: str(s.t), n: str(s.n), p: str(s.p), log: s.log.map((e) => `${e.at}/${e.cost}`) };
}

/** Periods worth testing: round ones, odd ones, and the bounds. */
function randomPeriod(rng) {
  switch (rng.int(6)) {
    case 0:
      return rng.pick([NS.ms, NS.s, NS.m, NS.h, 24n * NS.h, 7n * 24n * NS.h, MAX_PERIOD]);
    case 1:
      return rng.big(1n, MAX_PERIOD / NS.ms) * NS.ms; // odd, possibly huge
    case 2:
      return rng.big(1n, 10n) * NS.ms;
    default:
      return BigInt(1 + rng.int(30)) * rng.pick([NS.ms, 10n * NS.ms, 100n * NS.ms, NS.s]);
  }
}

function randomRule(rng, name) {
  const algorithm = rng.pick([...ALGORITHMS, 'gcra']);
  const period = randomPeriod(rng);
  let limit = rng.chance(0.8) ? BigInt(1 + rng.int(12)) : rng.big(1n, algorithm === 'sliding_window_log' ? 300n : 1_000_000_000n);
  if (algorithm === 'token_bucket' || algorithm === 'leaky_bucket' || algorithm === 'gcra') {
    if (period / limit < 1n) limit = period; // keep it valid
  }
  let burst = rng.chance(0.5) ? 0n : BigInt(1 + rng.int(20));
  if (rng.chance(0.1)) burst = rng.big(1n, 1_000_000_000n);
  return { name, algorithm, limit, period, burst };
}

function toWire(r) {
  return { Name: r.name, Algorithm: r.algorithm, Limit: str(r.limit), Period: str(r.period), Burst: str(r.burst) };
}

test('conformance with the Go specification (limit package)', { timeout: 300_000 }, (t) => {
  requireGo();
  const rng = new Prng(0xc0ffee);

  // 1. normalizeRule accepts and rejects what Rule.Normalize does.
  const normalize = [];
  for (let i = 0; i < 3000; i++) {
    normalize.push({
      name: `r${i}`,
      algorithm: rng.chance(0.03) ? 'bogus' : rng.pick([...ALGORITHMS, 'gcra']),
      limit: rng.pick([0n, -1n, 1n, 2n, 1_000_000_000n, 1_000_000_001n, 100_000n, 100_001n, rng.big(1n, 2_000_000n)]),
      period: rng.pick([0n, NS.ms - 1n, NS.ms, MAX_PERIOD, MAX_PERIOD + 1n, MAX_PERIOD + NS.ms, rng.big(1n, MAX_PERIOD), rng.big(1n, MAX_PERIOD / NS.ms) * NS.ms, rng.big(NS.ms, 2n * NS.ms)]),
      burst: rng.pick([0n, -1n, 1n, 1_000_000_000n, 1_000_000_001n, rng.big(1n, 3_000_000n)]),
    });
  }

  // 2. Scenarios: a limit set of 1 to 4 random rules and a few hundred
  // requests, with the clock mostly moving forward, sometimes standing still
  // and sometimes jumping back. Each scenario has a second version of its
  // limit set (a configuration reload: same rule names, other parameters or
  // algorithms) that some requests are checked against, with the same states.
  const validRule = (name) => {
    for (;;) {
      const r = randomRule(rng, name);
      try {
        normalizeRule(r);
        return r;
      } catch (err) {
        if (!(err instanceof InvalidRuleError)) throw err;
      }
    }
  };
  const scenarios = [];
  for (let i = 0; i < SCENARIOS; i++) {
    const rules = [];
    while (rules.length < 1 + rng.int(4)) rules.push(validRule(`rule${rules.length}`));
    const reloaded = rules.map((r) => {
      if (rng.chance(0.3)) return r;
      const other = validRule(r.name);
      // Mostly keep the algorithm, so that the state carries over.
      if (rng.chance(0.7)) {
        const same = { ...other, algorithm: r.algorithm };
        try {
          normalizeRule(same);
          return same;
        } catch {
          return other;
        }
      }
      return other;
    });
    const normalized = [...rules, ...reloaded].map((r) => normalizeRule(r));
    const minPeriod = normalized.reduce((a, r) => (r.period < a ? r.period : a), MAX_PERIOD);
    const maxCap = normalized.reduce((a, r) => (capacity(r) > a ? capacity(r) : a), 0n);
    let now = 1_700_000_000n * NS.s + rng.big(0n, 10n * NS.h);
    const ops = [];
    for (let j = 0; j < 250; j++) {
      const move = rng.int(10);
      if (move < 5) now += rng.big(0n, minPeriod / 2n);
      else if (move < 7) now += rng.big(0n, 3n * minPeriod);
      else if (move === 7) now -= rng.big(0n, minPeriod);
      else if (move === 8 && rng.chance(0.3)) now += rng.big(0n, MAX_PERIOD);
      let cost;
      const kind = rng.int(20);
      if (kind === 0) cost = 0n;
      else if (kind === 1) cost = maxCap + 1n;
      else if (kind === 2) cost = rng.big(1n, maxCap);
      else cost = BigInt(1 + rng.int(3));
      ops.push({ now, cost, set: rng.chance(0.2) ? 1 : 0 });
    }
    scenarios.push({ sets: [rules, reloaded], ops });
  }
  // Rate changes aimed at the rescale, each a timeline with the state of the
  // first set read under the second. The random scenarios cover it too, but
  // rarely at these extremes.
  const t0 = 1_767_225_600n * NS.s;
  const tb = (limit, period, burst = 0n) => [{ name: 'r', algorithm: 'token_bucket', limit, period, burst }];
  const fixed = [
    // 10/s lowered to 1/s after 10 used: denied (and rescaled) for 10s, still
    // denied 1s later, allowed at 10s.
    {
      sets: [tb(10n, NS.s), tb(1n, NS.s)],
      ops: [
        { now: t0, cost: 10n, set: 0 },
        { now: t0, cost: 1n, set: 1 },
        { now: t0, cost: 1n, set: 1 },
        { now: t0 + NS.s, cost: 1n, set: 1 },
        { now: t0 + 10n * NS.s - 1n, cost: 0n, set: 1 },
        { now: t0 + 10n * NS.s, cost: 1n, set: 1 },
      ],
    },
    // 10000/h fully used, then 1 per 744h: the debt is capped at MaxDebt.
    {
      sets: [tb(10_000n, NS.h), tb(1n, MAX_PERIOD)],
      ops: [
        { now: t0, cost: 10_000n, set: 0 },
        { now: t0, cost: 1n, set: 1 },
        { now: t0 + MAX_DEBT - 1n, cost: 1n, set: 1 },
        { now: t0 + MAX_DEBT, cost: 1n, set: 1 },
      ],
    },
    // 1e9 per second to 1 per 10s after a full burst: a rescaled debt of
    // 1e19 ns, beyond int64, capped at MaxDebt too; a peek rescales as well.
    {
      sets: [tb(1_000_000_000n, NS.s), tb(1n, 10n * NS.s)],
      ops: [
        { now: t0, cost: 1_000_000_000n, set: 0 },
        { now: t0, cost: 0n, set: 1 },
        { now: t0, cost: 1n, set: 1 },
        { now: t0 + MAX_DEBT, cost: 1n, set: 1 },
      ],
    },
    // Raised, then lowered with a leaky bucket, inexact intervals (1s/7,
    // 1s/3) so that the float64 rounding is exercised.
    {
      sets: [[{ name: 'r', algorithm: 'leaky_bucket', limit: 7n, period: NS.s, burst: 5n }], [{ name: 'r', algorithm: 'leaky_bucket', limit: 3n, period: NS.s, burst: 9n }]],
      ops: [
        { now: t0, cost: 5n, set: 0 },
        { now: t0 + 1n, cost: 1n, set: 1 },
        { now: t0 + 2n, cost: 3n, set: 0 },
        { now: t0 + 3n, cost: 9n, set: 1 },
        { now: t0 + 4n, cost: 2n, set: 1 },
        { now: t0 + NS.s, cost: 1n, set: 0 },
      ],
    },
    // A set denied by its window while its bucket rescales: the admitting
    // bucket saves its rescale only, nothing is consumed.
    {
      sets: [
        [...tb(10n, NS.s), { name: 'w', algorithm: 'fixed_window', limit: 1n, period: NS.m, burst: 0n }],
        [...tb(20n, NS.s), { name: 'w', algorithm: 'fixed_window', limit: 1n, period: NS.m, burst: 0n }],
      ],
      ops: [
        { now: t0, cost: 1n, set: 0 },
        { now: t0, cost: 1n, set: 1 },
        { now: t0, cost: 1n, set: 1 },
        { now: t0, cost: 0n, set: 0 },
      ],
    },
    // Go TestRaisedRateWithClockBackGrantsNothing: 10 used at 1/s, then a
    // peek 5s earlier at 10/s. The debt is rescaled from the write (t0), not
    // from t0-5s: none is back at t0, 9 are 1ns before t0+1s, and the
    // bucket is full at t0+1s.
    {
      sets: [tb(1n, NS.s, 10n), tb(10n, NS.s, 10n)],
      ops: [
        { now: t0, cost: 10n, set: 0 },
        { now: t0 - 5n * NS.s, cost: 0n, set: 1 },
        { now: t0, cost: 0n, set: 1 },
        { now: t0 + NS.s - 1n, cost: 0n, set: 1 },
        { now: t0 + NS.s, cost: 10n, set: 1 },
      ],
    },
    // A leaky bucket of 10/s: 2 used at t0, 1 more admitted 500ms earlier
    // (queued 700ms; p stays t0), then lowered to 1/s and raised back, both
    // met 400ms before t0: each rescale is anchored at p = t0 (300ms of debt
    // at 10/s is 3s at 1/s, and 300ms again). Then a full bucket at t0+1s,
    // and a cut met 1ns before that write, anchored at it.
    {
      sets: [[{ name: 'r', algorithm: 'leaky_bucket', limit: 10n, period: NS.s, burst: 0n }], [{ name: 'r', algorithm: 'leaky_bucket', limit: 1n, period: NS.s, burst: 0n }]],
      ops: [
        { now: t0, cost: 2n, set: 0 },
        { now: t0 - 500n * NS.ms, cost: 1n, set: 0 },
        { now: t0 - 400n * NS.ms, cost: 1n, set: 1 },
        { now: t0 - 400n * NS.ms, cost: 0n, set: 0 },
        { now: t0 + NS.s, cost: 10n, set: 0 },
        { now: t0 + NS.s - 1n, cost: 1n, set: 1 },
        { now: t0 + 30n * NS.s, cost: 1n, set: 1 },
      ],
    },
  ];
  scenarios.push(...fixed);

  const got = runGo({
    Normalize: normalize.map(toWire),
    Scenarios: scenarios.map((sc) => ({
      Sets: sc.sets.map((set) => set.map(toWire)),
      Ops: sc.ops.map((o) => ({ Now: str(o.now), Cost: str(o.cost), Set: o.set })),
    })),
  });

  normalize.forEach((r, i) => {
    let want;
    try {
      const n = normalizeRule(r);
      want = { ok: true, algorithm: n.algorithm, burst: str(n.burst), capacity: str(capacity(n)) };
    } catch (err) {
      if (!(err instanceof InvalidRuleError)) throw err;
      want = { ok: false, field: err.field };
    }
    assert.deepEqual(want, got.normalize[i], `normalize #${i} ${JSON.stringify(toWire(r))}`);
  });

  let compared = 0;
  let rescaledOnly = 0; // changed without consuming: denials and peeks that rescaled
  let anchoredAtP = 0; // bucket rescales measured from p, the clock behind the last write
  let bucketP = 0; // bucket states compared with a non-zero p
  scenarios.forEach((sc, i) => {
    const sets = sc.sets.map((set) => set.map((r) => normalizeRule(r)));
    const states = sets[0].map(() => null);
    sc.ops.forEach((o, j) => {
      const rules = sets[o.set];
      rules.forEach((r, k) => {
        const st = states[k];
        if (st && st.alg === r.algorithm && st.n !== 0n && st.n !== interval(r) && st.p > o.now && st.t > st.p) anchoredAtP++;
      });
      const { verdict: v, changed } = apply(rules, states, o.now, o.cost);
      const mine = {
        allowed: v.allowed,
        changed,
        retryAfter: str(v.retryAfter),
        delay: str(v.delay),
        binding: binding(v),
        decisions: v.decisions.map(decisionOut),
        states: states.map(stateOut),
        expiresAt: str(expiresAtSet(rules, states)),
      };
      assert.deepEqual(mine, got.scenarios[i][j], `scenario ${i} op ${j}: ${JSON.stringify({ rules: rules.map(toWire), now: str(o.now), cost: str(o.cost) })}`);
      compared++;
      if (changed && !(v.allowed && o.cost > 0n)) rescaledOnly++;
      bucketP += states.filter((st) => st && st.alg.endsWith('bucket') && st.p !== 0n).length;
    });
  });
  assert.equal(compared, SCENARIOS * 250 + fixed.reduce((n, sc) => n + sc.ops.length, 0));
  assert.ok(rescaledOnly >= fixed.length, `only ${rescaledOnly} denials or peeks rescaled a state`);
  assert.ok(anchoredAtP >= 3, `only ${anchoredAtP} rescales were anchored at p`);
  t.diagnostic(
    `${normalize.length} rules normalized, ${compared} requests compared with Go, ${rescaledOnly} of them denials or peeks that rescaled, ` +
      `${anchoredAtP} rescales anchored at p (clock behind the last write), ${bucketP} bucket states with p compared`,
  );
});

test('conformance harness: a Go program that does not build is reported with its compiler errors', { timeout: 120_000 }, (t) => {
  requireGo();
  // A large input, as the real one: it must not matter that go run never reads it.
  const input = { Normalize: Array.from({ length: 20_000 }, (_, i) => ({ Name: `r${i}`, Algorithm: 'token_bucket', Limit: '1', Period: '1000000', Burst: '0' })), Scenarios: [] };
  const broken = GO_MAIN.replace('v, changed := limit.Apply(', 'v, changed, extra := limit.Apply(');
  assert.notEqual(broken, GO_MAIN);
  assert.throws(
    () => runGo(input, broken),
    (err) => /go run failed \(exit 1\)/.test(err.message) && /--- go stderr ---/.test(err.message) && /main\.go:\d+:\d+: .*(assignment mismatch|extra)/.test(err.message),
  );
});
