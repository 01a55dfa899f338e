// Reference implementation of the DistributedRateLimiter algorithms in
// JavaScript: a line-by-line port of the Go package `limit` (rule.go, step.go,
// set.go), which is the specification. The Go service and its Redis scripts
// run the same algorithms; this file exists to show them plainly and to let a
// single Node.js process limit itself without the service.
//
// The model
// ---------
// A *rule* is one limit: "`limit` units per `period`", enforced by one of five
// algorithms. Its *state* is a small value: for the bucket algorithms a single
// timestamp. `step(rule, state, now, cost)` is a pure function that returns
// the next state and a *decision*; it reads no clock and does no I/O. A
// *limit set* ("100 per minute AND 1000 per hour") is checked with `apply`,
// all-or-nothing: the request consumes from every rule or from none.
//
// Numbers
// -------
// Every integer of the Go code (an int64) is a BigInt here: instants are Unix
// nanoseconds (about 1.7e18, far above Number.MAX_SAFE_INTEGER = 2^53 - 1),
// durations are nanoseconds, and counts are BigInts too so that no expression
// mixes the two kinds. The one exception is the sliding window counter, which
// deliberately weighs the previous window in float64 (a JS Number), in the
// same operation order as Go, so that every implementation agrees to the bit.
//
// Contracts shared by every algorithm (from the Go package documentation)
// ---------------------------------------------------------------------
//   - Only allowed requests consume; a denied request leaves the state as is,
//     except that a bucket state written under another rate is rescaled to
//     the rule's rate (nothing consumed), and that rescale must be saved:
//     step and apply report it as `changed`.
//   - Cost 0 is a peek: nothing is consumed, and the decision says whether a
//     request of cost 1 would pass now.
//   - A cost larger than the rule's capacity can never pass: the decision is
//     denied with retryAfter === RETRY_NEVER (-1n).
//   - A clock that goes backwards never grants extra capacity: state written
//     at a later instant is kept, and counted, until time catches up. A bucket
//     state records the latest instant it was written at (p), so that not
//     even a rate change met at an earlier instant shrinks its debt.
//   - States are immutable values: step never modifies the state it is given,
//     so the old state stays valid as "unchanged" (all-or-nothing needs that).

// ---------------------------------------------------------------------------
// Units and bounds
// ---------------------------------------------------------------------------

/** Nanoseconds per unit, as BigInts: `5n * NS.s` is five seconds. */
export const NS = Object.freeze({
  ns: 1n,
  us: 1_000n,
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
});

/** The number of rules one limit set may hold. */
export const MAX_RULES = 8;
/** The longest period, and the longest time a bucket may take to refill. */
export const MAX_PERIOD = 31n * 24n * NS.h;
/** The longest period of a fixed window (a year fits). */
export const MAX_WINDOW_PERIOD = 366n * 24n * NS.h;
/** The shortest period. */
export const MIN_PERIOD = NS.ms;
/** The bound of `limit` and `burst`. */
export const MAX_LIMIT = 1_000_000_000n;
/** The bound of `limit` for sliding_window_log, whose memory is O(limit). */
export const MAX_LOG_LIMIT = 100_000n;
/** retryAfter of a request that can never pass (cost above capacity). */
export const RETRY_NEVER = -1n;
/**
 * How far ahead of now a bucket's TAT may be pushed when a lowered rate
 * rescales what a subject already consumed: the longest wait a rate cut can
 * cause, whatever the change (2 * MAX_PERIOD, 62 days).
 */
export const MAX_DEBT = 2n * MAX_PERIOD;

/** The algorithms, by their configuration names. */
export const TOKEN_BUCKET = 'token_bucket';
export const LEAKY_BUCKET = 'leaky_bucket';
export const SLIDING_WINDOW_LOG = 'sliding_window_log';
export const SLIDING_WINDOW_COUNTER = 'sliding_window_counter';
export const FIXED_WINDOW = 'fixed_window';

export const ALGORITHMS = Object.freeze([
  TOKEN_BUCKET,
  LEAKY_BUCKET,
  SLIDING_WINDOW_LOG,
  SLIDING_WINDOW_COUNTER,
  FIXED_WINDOW,
]);

/** The names parseAlgorithm accepts: "gcra" is an alias of "token_bucket". */
export const ALGORITHM_NAMES = Object.freeze(['token_bucket', 'gcra', ...ALGORITHMS.slice(1)]);

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

/** Thrown by normalizeRule (and parseAlgorithm) for an unusable rule. */
export class InvalidRuleError extends Error {
  /**
   * @param {string} field the offending field ("limit", "period", ...)
   * @param {string} message
   */
  constructor(field, message) {
    super(`invalid rule: ${field}: ${message}`);
    this.name = 'InvalidRuleError';
    this.field = field;
  }
}

/**
 * Maps a configuration name to the canonical algorithm name.
 * @param {string} name
 * @returns {string}
 */
export function parseAlgorithm(name) {
  if (name === 'gcra') return TOKEN_BUCKET;
  if (ALGORITHMS.includes(name)) return name;
  throw new InvalidRuleError(
    'algorithm',
    `unknown algorithm ${JSON.stringify(name)} (want one of ${ALGORITHM_NAMES.join(', ')})`,
  );
}

const DURATION_UNITS = { ns: NS.ns, us: NS.us, µs: NS.us, μs: NS.us, ms: NS.ms, s: NS.s, m: NS.m, h: NS.h };

/**
 * Parses a duration such as "10h", "1m30s" or "250ms" into BigInt
 * nanoseconds. Only whole numbers are accepted ("1.5h" is not: write "1h30m").
 * A BigInt is returned as it is (it is already nanoseconds).
 * @param {string|bigint} value
 * @returns {bigint}
 */
export function parseDuration(value) {
  if (typeof value === 'bigint') return value;
  if (typeof value !== 'string') {
    throw new TypeError(`duration must be a string such as "1m" or BigInt nanoseconds, got ${typeof value}`);
  }
  const re = /(\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
  let total = 0n;
  let end = 0;
  for (let m = re.exec(value); m !== null; m = re.exec(value)) {
    total += BigInt(m[1]) * DURATION_UNITS[m[2]];
    end = re.lastIndex;
  }
  if (value === '' || end !== value.length) {
    throw new TypeError(`invalid duration ${JSON.stringify(value)} (want e.g. "10h", "1m30s", "250ms")`);
  }
  return total;
}

/** Converts an integer Number or a BigInt to BigInt; anything else throws. */
function toInt(value, field) {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  throw new InvalidRuleError(field, `${String(value)} is not an integer`);
}

/**
 * Validates a rule and fills its defaults, like Go's Rule.Normalize.
 *
 * Input: `{ name, algorithm, limit, period, burst }` where `algorithm` is a
 * configuration name ("token_bucket", "gcra", "leaky_bucket",
 * "sliding_window_log", "sliding_window_counter", "fixed_window"), `limit` and
 * `burst` are integers (Number or BigInt), and `period` is a duration string
 * ("1m") or BigInt nanoseconds, a whole number of milliseconds between 1ms
 * and 31 days. `burst` defaults to `limit` for the bucket
 * algorithms and is 0 (ignored) for the window algorithms.
 *
 * Output: a frozen rule whose numbers are all BigInt: the form `step` expects.
 * step() does not validate again.
 *
 * @returns {Readonly<{name: string, algorithm: string, limit: bigint, period: bigint, burst: bigint}>}
 */
export function normalizeRule({ name = '', algorithm, limit, period, burst = 0n } = {}) {
  const alg = parseAlgorithm(algorithm);
  const lim = toInt(limit, 'limit');
  let per;
  try {
    per = parseDuration(period);
  } catch (err) {
    throw new InvalidRuleError('period', err.message);
  }
  let bur = toInt(burst, 'burst');

  if (lim < 1n || lim > MAX_LIMIT) {
    throw new InvalidRuleError('limit', `${lim} is outside [1, ${MAX_LIMIT}]`);
  }
  const maxPer = alg === 'fixed_window' ? MAX_WINDOW_PERIOD : MAX_PERIOD;
  if (per < MIN_PERIOD || per > maxPer) {
    throw new InvalidRuleError('period', `${per}ns is outside [${MIN_PERIOD}ns, ${maxPer}ns]`);
  }
  if (per % NS.ms !== 0n) {
    // Window starts are computed from Unix milliseconds by the Redis scripts,
    // whose doubles cannot hold Unix nanoseconds exactly.
    throw new InvalidRuleError('period', `${per}ns is not a whole number of milliseconds`);
  }
  switch (alg) {
    case TOKEN_BUCKET:
    case LEAKY_BUCKET:
      if (bur === 0n) bur = lim;
      if (bur < 1n || bur > MAX_LIMIT) {
        throw new InvalidRuleError('burst', `${bur} is outside [1, ${MAX_LIMIT}]`);
      }
      if (per / lim < 1n) {
        throw new InvalidRuleError('limit', `${lim} per ${per}ns is more than one per nanosecond`);
      }
      // The bucket must refill from empty to full (burst * interval) within
      // MAX_PERIOD.
      if (bur > MAX_PERIOD / (per / lim)) {
        throw new InvalidRuleError('burst', `${bur} takes longer than ${MAX_PERIOD}ns to refill at ${lim} per ${per}ns`);
      }
      break;
    case SLIDING_WINDOW_LOG:
      if (lim > MAX_LOG_LIMIT) {
        throw new InvalidRuleError(
          'limit',
          `sliding_window_log keeps one entry per request; ${lim} is over its bound ${MAX_LOG_LIMIT}`,
        );
      }
      bur = 0n;
      break;
    default:
      bur = 0n;
  }
  return Object.freeze({ name: String(name), algorithm: alg, limit: lim, period: per, burst: bur });
}

/**
 * The largest cost a single request may ever have: burst for the bucket
 * algorithms, limit for the window algorithms.
 */
export function capacity(rule) {
  return isBucket(rule.algorithm) ? rule.burst : rule.limit;
}

function isBucket(algorithm) {
  return algorithm === TOKEN_BUCKET || algorithm === LEAKY_BUCKET;
}

/**
 * The GCRA emission interval of a bucket rule: the time one unit takes to
 * refill, period / limit rounded down to the nanosecond (by less than a
 * nanosecond per unit: far below any measurable effect). The Redis scripts
 * take it as a parameter so that they round exactly as step does.
 */
export function interval(rule) {
  return rule.period / rule.limit;
}

// ---------------------------------------------------------------------------
// State and decisions
// ---------------------------------------------------------------------------

/**
 * The stored state of one rule for one key. Fields are used per algorithm:
 *
 *   token_bucket, leaky_bucket: t = theoretical arrival time (TAT),
 *                               n = the emission interval it was written with,
 *                               p = the latest instant it was written at
 *   fixed_window:               t = window start, n = units counted in it
 *   sliding_window_counter:     t = current window start, n = its count,
 *                               p = the previous window's count
 *   sliding_window_log:         log = admitted requests {at, cost}, oldest
 *                               first; n = their total cost
 *
 * `alg` records which algorithm wrote the state; a state written by another
 * algorithm (after a configuration change) is treated as fresh. `null` and
 * `undefined` are accepted wherever a state is, and mean a fresh key.
 *
 * @typedef {{alg: string|null, t: bigint, n: bigint, p: bigint, log: ReadonlyArray<{at: bigint, cost: bigint}>}} State
 */

/** @returns {State} the state of a key never seen before. */
export function freshState(alg = null) {
  return { alg, t: 0n, n: 0n, p: 0n, log: [] };
}

/**
 * The outcome of one rule for one request.
 *
 *   allowed     whether the rule admits the request
 *   limit       the rule's limit (units per period)
 *   remaining   whole units that could still pass now, after this decision
 *   resetAfter  ns until the rule is back to full capacity if nothing more
 *               is consumed
 *   retryAfter  0n when allowed; when denied, ns until the same request would
 *               pass (if nothing else consumes), or RETRY_NEVER
 *   delay       ns an allowed request should wait before it proceeds
 *               (leaky_bucket shaping); 0n otherwise
 *
 * @typedef {{allowed: boolean, limit: bigint, remaining: bigint, resetAfter: bigint, retryAfter: bigint, delay: bigint}} Decision
 */

function newDecision(limit) {
  return { allowed: false, limit, remaining: 0n, resetAfter: 0n, retryAfter: 0n, delay: 0n };
}

const bigMax = (a, b) => (a > b ? a : b);

/** Division rounding towards negative infinity (BigInt `/` truncates). */
function floorDiv(a, b) {
  let q = a / b;
  if (a % b !== 0n && a < 0n !== b < 0n) q -= 1n;
  return q;
}

// ---------------------------------------------------------------------------
// step: the check-and-consume of one rule
// ---------------------------------------------------------------------------

/**
 * Evaluates a request of `cost` units at instant `now` (BigInt Unix
 * nanoseconds) against a normalized `rule` in `state`, and returns the next
 * state, the decision, and whether the next state differs from `state`.
 * Pure: the caller loads the state, calls step and, when `changed`, saves the
 * returned state atomically (in one process, synchronously).
 *
 * When the request is denied, or cost is 0, nothing is consumed and the
 * returned state is `state` itself (same object, `changed` false), except
 * that a bucket state written under another rate comes back rescaled to the
 * rule's rate (see gcra) with `changed` true: a change of representation,
 * not a consumption, which the caller must save so that the subject refills
 * at the new rate from then on. (Go's Rule.Step returns the same state and
 * decision; `changed` is what its unexported step adds for Apply.)
 *
 * @param {ReturnType<typeof normalizeRule>} rule
 * @param {State|null|undefined} state
 * @param {bigint} now
 * @param {bigint|number} cost a whole number >= 0
 * @returns {{state: State|null|undefined, decision: Decision, changed: boolean}}
 */
export function step(rule, state, now, cost) {
  if (typeof now !== 'bigint') throw new TypeError('now must be BigInt Unix nanoseconds');
  const c = toCost(cost);
  // `next` starts as a copy of the state; a state written by another
  // algorithm (or no state at all) is a fresh key. The algorithm functions
  // advance `next` only when the request is allowed and cost > 0, or (gcra)
  // when they rescale it to the rule's rate.
  const next = state && state.alg === rule.algorithm ? { ...state } : freshState(rule.algorithm);
  let d;
  let rescaled = false;
  switch (rule.algorithm) {
    case TOKEN_BUCKET:
    case LEAKY_BUCKET:
      ({ decision: d, rescaled } = gcra(rule, next, now, c));
      break;
    case FIXED_WINDOW:
      d = fixedWindow(rule, next, now, c);
      break;
    case SLIDING_WINDOW_COUNTER:
      d = slidingCounter(rule, next, now, c);
      break;
    case SLIDING_WINDOW_LOG:
      d = slidingLog(rule, next, now, c);
      break;
    default:
      return { state, decision: { ...newDecision(rule.limit), retryAfter: RETRY_NEVER }, changed: false };
  }
  // An allowed request of cost > 0 moves the state; a rescale rewrites it.
  if ((d.allowed && c > 0n) || rescaled) return { state: next, decision: d, changed: true };
  return { state, decision: d, changed: false };
}

function toCost(cost) {
  const c = typeof cost === 'number' && Number.isSafeInteger(cost) ? BigInt(cost) : cost;
  if (typeof c !== 'bigint' || c < 0n) throw new RangeError(`cost must be a whole number >= 0, got ${String(cost)}`);
  return c;
}

// The algorithm functions below evaluate a request of `cost` against `s` (a
// private copy, already fresh if it belonged to another algorithm) and update
// `s` only when the request is allowed and cost > 0 (and gcra when it
// rescales). Cost 0 is evaluated as a peek of cost 1: `c = max(cost, 1)` is
// what is checked, `cost` what is consumed. Remaining and resetAfter describe
// the state after the decision.

/** MAX_DEBT as a float64, the bound of the rescaled debt (exact: < 2^53). */
const MAX_DEBT_FLOAT = Number(MAX_DEBT);

/**
 * token_bucket and leaky_bucket, as GCRA (the generic cell rate algorithm).
 *
 * With emission interval I = period / limit and tolerance tau = burst * I, the
 * state is one instant, the theoretical arrival time TAT: the time at which
 * the bucket would be full again (s.n records the I it was written with). A
 * request of cost c at `now` is admitted iff
 *
 *     max(TAT, now) + c*I - now <= tau
 *
 * and admitting it moves TAT there. The bucket holds (tau - (TAT - now)) / I
 * whole tokens. leaky_bucket admits exactly the same requests and reports as
 * `delay` the time its queue takes to drain down to the new request, so
 * callers that wait `delay` leave at a steady rate of one unit per I.
 *
 * When the rule's interval differs from the state's (`s.n`), the debt is
 * rescaled first, exactly as "Changing a rule" in the Go package doc
 * (limit/rule.go) states: from base = max(now, s.p), in float64 in the same
 * order, capped at MAX_DEBT. `rescaled` reports it so that the state is
 * saved whatever the decision; a consuming write records max(s.p, now) as
 * its latest instant.
 *
 * @returns {{decision: Decision, rescaled: boolean}}
 */
function gcra(rule, s, now, cost) {
  const iv = interval(rule);
  const tau = rule.burst * iv;
  let tat = s.t;
  let rescaled = false;
  const base = bigMax(now, s.p); // not before the state's latest write
  if (s.n !== 0n && s.n !== iv && tat > base) {
    // float64(tat-base) * float64(iv) / float64(s.n): Number(BigInt) rounds
    // to nearest as Go's int64 -> float64 does, and the capped debt is at
    // most MAX_DEBT < 2^53, so Math.trunc then BigInt is Go's exact int64().
    const debt = (Number(tat - base) * Number(iv)) / Number(s.n);
    tat = base + BigInt(Math.trunc(Math.min(debt, MAX_DEBT_FLOAT)));
    s.t = tat;
    s.n = iv;
    s.p = base;
    rescaled = true;
  }
  tat = bigMax(tat, now); // a TAT in the past means a full bucket
  const d = newDecision(rule.limit);
  const c = bigMax(cost, 1n);
  const newTAT = tat + c * iv;
  if (c > rule.burst) {
    d.retryAfter = RETRY_NEVER;
  } else if (newTAT - now > tau) {
    // It passes once now has advanced so far that newTAT - now == tau.
    d.retryAfter = newTAT - tau - now;
  } else {
    d.allowed = true;
    if (rule.algorithm === LEAKY_BUCKET) {
      d.delay = tat - now; // the queue ahead of this request
    }
    if (cost > 0n) {
      s.t = newTAT;
      s.n = iv;
      s.p = bigMax(s.p, now);
      tat = newTAT;
    }
  }
  d.remaining = bigMax(0n, (tau - (tat - now)) / iv);
  d.resetAfter = tat - now;
  return { decision: d, rescaled };
}

/**
 * fixed_window counts units in the window [k*period, (k+1)*period) holding
 * now: windows are aligned to multiples of the period since the Unix epoch,
 * so a 1m window starts on the minute. State from a later window (a clock
 * that went back) is kept and counted.
 */
function fixedWindow(rule, s, now, cost) {
  const p = rule.period;
  let ws = floorDiv(now, p) * p; // start of now's window
  let count = 0n;
  if (s.t >= ws) {
    // The same window, or a later one when the clock went back.
    ws = s.t;
    count = s.n;
  }
  const end = ws + p;
  const d = newDecision(rule.limit);
  const c = bigMax(cost, 1n);
  if (c > rule.limit) {
    d.retryAfter = RETRY_NEVER;
  } else if (count + c > rule.limit) {
    d.retryAfter = end - now; // the next window starts empty
  } else {
    d.allowed = true;
    if (cost > 0n) {
      count += cost;
      s.t = ws;
      s.n = count;
    }
  }
  d.remaining = bigMax(0n, rule.limit - count);
  if (count > 0n) d.resetAfter = end - now;
  return d;
}

/**
 * sliding_window_counter estimates the units in the sliding interval
 * (now - period, now] from two fixed windows:
 *
 *     used = floor(prev * (period - elapsed) / period) + curr
 *
 * where curr counts the window holding now, prev the window before it, and
 * elapsed is the time since the current window started. The previous window
 * is weighted by the share of it still inside the sliding interval.
 */
function slidingCounter(rule, s, now, cost) {
  const p = rule.period;
  let ws = floorDiv(now, p) * p;
  let curr = 0n;
  let prev = 0n;
  if (s.t >= ws) {
    // The same window, or a later one when the clock went back.
    ws = s.t;
    curr = s.n;
    prev = s.p;
  } else if (s.t === ws - p) {
    // The stored window has just become the previous one.
    prev = s.n;
  }
  const elapsed = bigMax(0n, now - ws);
  let used = weigh(prev, p - elapsed, p) + curr;
  const d = newDecision(rule.limit);
  const c = bigMax(cost, 1n);
  if (c > rule.limit) {
    d.retryAfter = RETRY_NEVER;
  } else if (used + c > rule.limit) {
    d.retryAfter = counterRetry(rule, ws, elapsed, now, curr, prev, c);
  } else {
    d.allowed = true;
    if (cost > 0n) {
      curr += cost;
      used += cost;
      s.t = ws;
      s.n = curr;
      s.p = prev;
    }
  }
  d.remaining = bigMax(0n, rule.limit - used);
  d.resetAfter = counterReset(ws, p, now, curr, prev);
  return d;
}

/**
 * floor(n * rem / p) computed in float64, in exactly this order:
 * (n * rem) / p, then truncation. This is deliberate, not a shortcut: the
 * Redis script computes it with Lua's doubles, and every implementation must
 * produce bit-identical estimates. (Number(BigInt) rounds to nearest like Go's
 * float64(int64); Math.trunc matches Go's int64(float64) for these
 * non-negative values.)
 */
export function weigh(n, rem, p) {
  if (n === 0n || rem <= 0n) return 0n;
  return BigInt(Math.trunc((Number(n) * Number(rem)) / Number(p)));
}

/** When the current count (or else the previous one) has left the interval. */
function counterReset(ws, p, now, curr, prev) {
  if (curr > 0n) return ws + 2n * p - now;
  if (prev > 0n) return ws + p - now;
  return 0n;
}

/**
 * The first instant at which a request of `cost` would pass if nothing else
 * is consumed. The estimate only falls as time passes, so a binary search
 * over the elapsed time within a window finds it exactly.
 */
function counterRetry(rule, ws, elapsed, now, curr, prev, cost) {
  const p = rule.period;
  if (curr + cost <= rule.limit) {
    // It passes later in this window, once enough of prev has slid out.
    const e = firstPassing(elapsed, p, (x) => weigh(prev, p - x, p) + curr + cost <= rule.limit);
    return ws + e - now;
  }
  // It passes in the next window, where curr becomes the previous count.
  const e = firstPassing(-1n, p, (x) => weigh(curr, p - x, p) + cost <= rule.limit);
  return ws + p + e - now;
}

/** The least e in (lo, hi] with ok(e), given ok is monotone and ok(hi). */
function firstPassing(lo, hi, ok) {
  while (hi - lo > 1n) {
    const mid = lo + (hi - lo) / 2n;
    if (ok(mid)) hi = mid;
    else lo = mid;
  }
  return hi;
}

/**
 * sliding_window_log is exact: it keeps one entry {at, cost} per admitted
 * request (and in s.n their total cost) and counts those inside
 * (now - period, now], so at most `limit` units are admitted in any interval
 * of length period. An entry expires at at + period. Entries stamped later
 * than now (a clock that went back) stay counted until they expire, and a new
 * entry is never stamped before the newest one, so the log stays sorted.
 */
function slidingLog(rule, s, now, cost) {
  const p = rule.period;
  let first = 0;
  let sum = s.n;
  while (first < s.log.length && s.log[first].at <= now - p) {
    sum -= s.log[first].cost; // expired
    first++;
  }
  let log = s.log.slice(first); // a copy: the input state is never modified
  const d = newDecision(rule.limit);
  const c = bigMax(cost, 1n);
  if (c > rule.limit) {
    d.retryAfter = RETRY_NEVER;
  } else if (sum + c > rule.limit) {
    // Wait until the oldest entries holding `need` units have expired.
    let need = sum + c - rule.limit;
    for (const e of log) {
      need -= e.cost;
      if (need <= 0n) {
        d.retryAfter = e.at + p - now;
        break;
      }
    }
  } else {
    d.allowed = true;
    if (cost > 0n) {
      const at = log.length > 0 ? bigMax(now, log[log.length - 1].at) : now;
      log.push(Object.freeze({ at, cost }));
      sum += cost;
      s.log = log;
      s.n = sum;
    }
  }
  d.remaining = bigMax(0n, rule.limit - sum);
  if (log.length > 0) d.resetAfter = log[log.length - 1].at + p - now;
  return d;
}

/**
 * The instant from which `state` is equivalent to a fresh state for `rule`,
 * so a store may drop it (and a Redis key may expire). 0n for a fresh state.
 */
export function expiresAt(rule, state) {
  if (!state || state.alg !== rule.algorithm) return 0n;
  const p = rule.period;
  switch (rule.algorithm) {
    case TOKEN_BUCKET:
    case LEAKY_BUCKET:
      return state.t; // the bucket is full again at its TAT
    case FIXED_WINDOW:
      return state.t + p;
    case SLIDING_WINDOW_COUNTER:
      return state.n > 0n ? state.t + 2n * p : state.t + p;
    case SLIDING_WINDOW_LOG:
      return state.log.length === 0 ? 0n : state.log[state.log.length - 1].at + p;
    default:
      return 0n;
  }
}

// ---------------------------------------------------------------------------
// Limit sets: all-or-nothing
// ---------------------------------------------------------------------------

/**
 * The outcome of a request against a limit set.
 *
 *   allowed     whether every rule admitted the request
 *   retryAfter  0n when allowed; when denied, the longest retryAfter of the
 *               denying rules, or RETRY_NEVER if any of them can never pass.
 *               Waiting it out is enough: capacity only grows while nothing
 *               is consumed.
 *   delay       the longest delay of the rules when allowed (shaping)
 *   decisions   one decision per rule, in the rules' order. For a denied set,
 *               the rules that would have admitted the request report the
 *               decision of a peek: their remaining is unconsumed.
 *
 * @typedef {{allowed: boolean, retryAfter: bigint, delay: bigint, decisions: Decision[]}} Verdict
 */

/**
 * Evaluates a request of `cost` units at `now` against every rule of a limit
 * set, all-or-nothing: the request is allowed only if every rule admits it,
 * and only then is anything consumed. `states[i]` is the state of `rules[i]`.
 *
 * Returns `{ verdict, changed }`, as Go's `(Verdict, changed bool)`. apply
 * replaces the elements of `states` that changed, and `changed` reports
 * whether any did, in which case the caller must save `states`:
 *
 *   - when the request is allowed and cost > 0 (every rule consumed), and
 *   - when a bucket state written under another rate was rescaled to its
 *     rule's rate (see step), even for a denied request or a peek: nothing
 *     is consumed, but the subject must refill at the new rate from then on.
 *
 * (The state objects themselves are never modified.) For a denied set, the
 * rules that would have admitted the request report a peek.
 *
 * @param {ReadonlyArray<ReturnType<typeof normalizeRule>>} rules
 * @param {Array<State|null|undefined>} states
 * @param {bigint} now
 * @param {bigint|number} cost
 * @returns {{verdict: Verdict, changed: boolean}}
 */
export function apply(rules, states, now, cost) {
  if (rules.length !== states.length) throw new RangeError('apply: rules and states differ in length');
  if (rules.length > MAX_RULES) throw new RangeError(`apply: more than ${MAX_RULES} rules`);
  const c = toCost(cost);
  // 1. Evaluate every rule against its current state; commit nothing yet.
  const results = [];
  let allowed = true;
  for (let i = 0; i < rules.length; i++) {
    const r = step(rules[i], states[i], now, c);
    results.push(r);
    allowed = allowed && r.decision.allowed;
  }
  if (!allowed && c > 0n) {
    // 2. Denied: nothing is consumed anywhere. The rules that would have
    // admitted it report an unconsumed (peek) decision instead, and keep only
    // what the peek changed: a rescale to their rate, if any.
    for (let i = 0; i < rules.length; i++) {
      if (results[i].decision.allowed) results[i] = step(rules[i], states[i], now, 0n);
    }
  }
  // 3. Commit what changed: every consumption when allowed, rescales always.
  let changed = false;
  for (let i = 0; i < rules.length; i++) {
    if (results[i].changed) {
      states[i] = results[i].state;
      changed = true;
    }
  }
  return { verdict: combine(results.map((r) => r.decision)), changed };
}

/**
 * Builds the verdict of a limit set from its per-rule decisions (for a
 * denied set, the admitting rules' decisions are peeks), exactly as apply
 * does. Stores that run the algorithms elsewhere (the Redis scripts)
 * aggregate with it.
 * @param {Decision[]} decisions
 * @returns {Verdict}
 */
export function combine(decisions) {
  const v = { allowed: decisions.every((d) => d.allowed), retryAfter: 0n, delay: 0n, decisions: [...decisions] };
  for (const d of decisions) {
    if (v.allowed) {
      v.delay = bigMax(v.delay, d.delay); // shaping: wait for the slowest queue
    } else if (d.allowed) {
      // an admitting rule adds no wait
    } else if (d.retryAfter === RETRY_NEVER || v.retryAfter === RETRY_NEVER) {
      v.retryAfter = RETRY_NEVER;
    } else {
      v.retryAfter = bigMax(v.retryAfter, d.retryAfter);
    }
  }
  return v;
}

/**
 * The index of the decision that best explains a verdict: when denied, the
 * denying rule with the longest wait (RETRY_NEVER counts as the longest);
 * when allowed, the rule with the fewest remaining units. It is the rule to
 * report in single-limit headers such as X-RateLimit-Remaining. 0 when the
 * set is empty.
 * @param {Verdict} v
 */
export function binding(v) {
  let best = 0;
  for (let i = 1; i < v.decisions.length; i++) {
    const d = v.decisions[i];
    const b = v.decisions[best];
    if (v.allowed) {
      if (d.remaining < b.remaining) best = i;
    } else if (d.allowed) {
      // an admitting rule never explains a denial
    } else if (b.allowed) {
      best = i;
    } else if (b.retryAfter === RETRY_NEVER) {
      // nothing waits longer than never
    } else if (d.retryAfter === RETRY_NEVER || d.retryAfter > b.retryAfter) {
      best = i;
    }
  }
  return best;
}

/** The instant from which every state of the set is fresh again. */
export function expiresAtSet(rules, states) {
  let at = 0n;
  for (let i = 0; i < rules.length; i++) at = bigMax(at, expiresAt(rules[i], states[i]));
  return at;
}

// ---------------------------------------------------------------------------
// InMemoryLimiter: how one process uses the core
// ---------------------------------------------------------------------------

/** Unix nanoseconds from the wall clock (millisecond resolution). */
export function systemClock() {
  return BigInt(Date.now()) * NS.ms;
}

/**
 * A rate limiter for a single Node.js process: a Map from key (a user id)
 * to the states of one limit set.
 *
 * Atomicity: check() is synchronous, so the load - apply - save of one key
 * runs without interleaving. (Across processes, the Go service does the same
 * against Redis with a script, which Redis runs atomically.)
 *
 * Memory: a key's entry is dropped once it is equivalent to a fresh key
 * (expiresAtSet), and at most `maxKeys` keys are held. When the map is full,
 * the least recently written key is evicted even if still live: that forgets
 * its consumption, so it errs towards admitting (counted in `evictions`).
 * Size maxKeys for the number of keys active within the longest period.
 *
 * Configuration: setRules() swaps the limit set without losing state; a
 * key's state is kept per rule name, so a rule keeps its state when its
 * parameters change and a renamed rule starts fresh. A bucket rule whose rate
 * changed rescales the key's state on its next check (allowed, denied or a
 * peek), and that rescaled state is saved.
 */
export class InMemoryLimiter {
  /**
   * @param {object} options
   * @param {Array<object>} options.rules rule specs for normalizeRule (or normalized rules)
   * @param {() => bigint} [options.clock] returns BigInt Unix nanoseconds
   * @param {number} [options.maxKeys] the most keys held at once
   */
  constructor({ rules, clock = systemClock, maxKeys = 100_000 } = {}) {
    if (!Number.isSafeInteger(maxKeys) || maxKeys < 1) throw new RangeError('maxKeys must be a positive integer');
    this.clock = clock;
    this.maxKeys = maxKeys;
    /** How many live keys were evicted because the map was full. */
    this.evictions = 0;
    /** @type {Map<string, {states: Map<string, State>, rules: object[], expiresAt: bigint}>} oldest write first */
    this.entries = new Map();
    this.setRules(rules);
  }

  /** Replaces the limit set. Validates all rules first, then swaps. */
  setRules(rules) {
    if (!Array.isArray(rules) || rules.length > MAX_RULES) {
      throw new RangeError(`rules must be an array of at most ${MAX_RULES} rules`);
    }
    const normalized = rules.map((r) => normalizeRule(r));
    const names = new Set(normalized.map((r) => r.name));
    if (names.size !== normalized.length) throw new InvalidRuleError('name', 'rule names must be unique in a set');
    this.rules = Object.freeze(normalized);
  }

  /**
   * Checks a request of `cost` units for `key` and consumes it if every rule
   * admits it. Cost 0 is a peek. The key's states are saved whenever apply
   * changed them: on consumption, and on a rescale after a rate change.
   * @param {string} key
   * @param {number|bigint} [cost]
   * @returns {Verdict}
   */
  check(key, cost = 1) {
    const now = this.clock();
    const rules = this.rules;
    let entry = this.entries.get(key);
    if (entry && this.#expiresAt(entry) <= now) {
      this.entries.delete(key); // every state has run out: a fresh key
      entry = undefined;
    }
    const states = rules.map((r) => entry?.states.get(r.name));
    const { verdict, changed } = apply(rules, states, now, cost);
    if (changed) this.#save(key, rules, states, now);
    return verdict;
  }

  /** Whether a request of cost 1 would pass now; consumes nothing. */
  peek(key) {
    return this.check(key, 0);
  }

  /** The number of keys held. */
  get size() {
    return this.entries.size;
  }

  /** Drops every expired key; returns how many were dropped. O(keys). */
  sweep() {
    const now = this.clock();
    let dropped = 0;
    for (const [key, entry] of this.entries) {
      if (this.#expiresAt(entry) <= now) {
        this.entries.delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  /** An entry's expiry under the current rules (they may have changed since it was written). */
  #expiresAt(entry) {
    if (entry.rules !== this.rules) {
      entry.expiresAt = expiresAtSet(this.rules, this.rules.map((r) => entry.states.get(r.name)));
      entry.rules = this.rules;
    }
    return entry.expiresAt;
  }

  #save(key, rules, states, now) {
    const byName = new Map();
    rules.forEach((r, i) => byName.set(r.name, states[i]));
    // Re-insert so that the Map's iteration order is least recently written
    // first.
    this.entries.delete(key);
    this.entries.set(key, { states: byName, rules, expiresAt: expiresAtSet(rules, states) });
    // Keep the bound: drop the oldest entries, expired or not, while full.
    // Also drop a couple of expired entries from the front as we go, so an
    // idle map shrinks without a full sweep.
    for (let i = 0; i < 2 && this.entries.size > 1; i++) {
      const [oldKey, oldEntry] = this.entries.entries().next().value;
      if (this.#expiresAt(oldEntry) <= now) this.entries.delete(oldKey);
      else break;
    }
    while (this.entries.size > this.maxKeys) {
      const oldKey = this.entries.keys().next().value;
      this.entries.delete(oldKey);
      this.evictions++;
    }
  }
}
