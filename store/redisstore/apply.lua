-- apply.lua: check-and-consume for a batch of rate limit checks, atomically.
--
-- This is a transcription of package limit (rule.go, step.go, set.go); the
-- conformance suite (store/storetest) holds it to the same numbers. Read those
-- files for the model; this header only states the calling convention.
--
-- ARGV[1], ARGV[2]: the current instant as Unix seconds and nanoseconds, or
--                   both "" to use the Redis server's TIME.
-- ARGV[3]:          M, the number of checks.
-- ARGV[4]:          "1" when a key may appear in more than one check, else "0".
-- ARGV[5]:          T, the number of distinct rules; then T times:
--                     algorithm, limit, period_ns, burst, interval_ns,
--                     shadow (1: a rule in shadow mode, whose denial does
--                     not deny its check: limit.Rule.Shadow)
-- Then, per check:    R (number of rules), and R pairs: an index (1-based)
--                     into that rule table, and the cost charged to it.
-- KEYS:             one key per rule, in order, for all checks.
--
-- Checks are processed in order, so repeated checks of one key (a hot subject
-- coalesced by the caller) see each other's consumption exactly as if they had
-- arrived one by one. Each check is all-or-nothing over its rules, which may
-- belong to several subjects (the descriptors of one request, each its own
-- key, each rule with its own cost: limit.ApplyParts).
--
-- A check of one token_bucket rule with a negative cost -n is a lease's take
-- (limit.Rule.Take): up to n units, as many as the bucket holds; its delay
-- value is then the number taken. A take is followed by three more
-- arguments, its holder's report (store.Report: the holder, its demand in
-- units per second, how long the report stands in ns), and one more key,
-- the hash of the limit's standing reports; its reset value is then the
-- sum of the reports that stand, in thousandths of a unit per second.
--
-- Returns a flat array: the instant used, as Unix seconds and nanoseconds;
-- then per check per rule: allowed (0/1), remaining, reset_after_ns,
-- retry_after_ns (-1: never), delay_ns, and mark_ns: where a consumption
-- landed (limit.Rule.Mark), relative to the instant, for refund.lua (0
-- when the rule consumed nothing).
--
-- Time: Lua numbers are doubles, exact only below 2^53 (~104 days in ns), so
-- instants are stored as "seconds nanoseconds" and all arithmetic is done on
-- times relative to now, which the rule bounds (limit.MaxPeriod) keep small.
-- Each key holds one string: "<algorithm> <fields...>", so a key written by
-- another algorithm is recognised and treated as fresh.

local TB, LB, SWL, SWC, FW = 1, 2, 3, 4, 5

local now_s, now_ns
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now_s, now_ns = tonumber(t[1]), tonumber(t[2]) * 1000
else
  now_s, now_ns = tonumber(ARGV[1]), tonumber(ARGV[2])
end

-- floor(a / b) for integers, exact even where the double quotient rounds.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end

-- rel: an instant stored as seconds + nanoseconds, relative to now, in ns.
-- Instants over ~90 days away are clamped: such state has long expired.
local function rel(s, ns)
  local ds = s - now_s
  if ds < -7776000 then return -7776000 * 1e9 end
  return ds * 1e9 + (ns - now_ns)
end

-- split: the instant now + r as Unix seconds and nanoseconds.
local function split(r)
  local x = now_ns + r
  local q = idiv(x, 1e9)
  return now_s + q, x - q * 1e9
end

-- stamp: the instant now + r, formatted "seconds nanoseconds".
local function stamp(r)
  return string.format('%d %d', split(r))
end

-- window_start: start of the window of length p (whole ms) holding now,
-- relative to now (<= 0). Computed on Unix milliseconds, which doubles hold.
local function window_start(p)
  local now_ms = now_s * 1000 + idiv(now_ns, 1e6)
  local pm = p / 1e6
  local em = now_ms - idiv(now_ms, pm) * pm
  return -(em * 1e6 + (now_ns - idiv(now_ns, 1e6) * 1e6))
end

local function fields(v)
  local f = {}
  for x in string.gmatch(v, '%S+') do f[#f + 1] = tonumber(x) end
  return f
end

-- weigh: floor(n * rem / p) in doubles, in the same order as limit.weigh.
local function weigh(n, rem, p)
  if n == 0 or rem <= 0 then return 0 end
  return math.floor(n * rem / p)
end

-- first_passing: least e in (lo, hi] with ok(e); ok is monotone, ok(hi) holds.
local function first_passing(lo, hi, ok)
  while hi - lo > 1 do
    local mid = lo + math.floor((hi - lo) / 2)
    if ok(mid) then hi = mid else lo = mid end
  end
  return hi
end

-- Each step function evaluates one rule against the state in key for a
-- request of cost (0: a peek of cost 1) and returns the decision
-- {allowed, remaining, reset, retry, delay} and, when the state changed, the
-- new value and its time to live in ms (else nil). The state changes when the
-- request is allowed and consumes, and when a bucket is rescaled.

local function ttl_ms(expires_rel)
  -- One second of slack: a key kept a little past its expiry is still
  -- equivalent to a fresh one, a key dropped early would not be.
  return math.max(1, math.ceil(expires_rel / 1e6)) + 1000
end

-- limit.MaxDebt: the cap on a rescaled bucket debt, in ns.
local MAX_DEBT = 2 * 31 * 24 * 3600 * 1e9

-- A bucket state written under another rate is rescaled to this rule's rate
-- and saved even when nothing is consumed (limit.Rule.gcra).
-- The bucket state is "<alg> <TAT> <interval> <latest write instant>", the
-- instants as "seconds nanoseconds". A rescale measures the debt from the
-- latest instant the state has seen, so a clock that stepped back cannot
-- shrink it.
local function gcra_value(alg, tat, iv, seen)
  local ts, tn = split(tat)
  local ss, sn = split(seen)
  return string.format('%d %d %d %d %d %d', alg, ts, tn, iv, ss, sn)
end

-- gcra takes the stored value v (or nil) itself: it is the default algorithm
-- and the hot path, so it parses with one pattern and no table.
local function gcra(v, alg, burst, iv, cost)
  local tau = burst * iv
  local tat, seen = -1, -7776000 * 1e9
  local val, ttl
  local fa, f2, f3, f4, f5, f6
  if v then
    fa, f2, f3, f4, f5, f6 = string.match(v, '^(%d+) (%-?%d+) (%d+) (%d+) ?(%-?%d*) ?(%d*)$')
  end
  if fa and tonumber(fa) == alg then
    tat = rel(tonumber(f2), tonumber(f3))
    if f6 ~= '' then seen = rel(tonumber(f5), tonumber(f6)) end -- absent in a value of an older script
    local old_iv = tonumber(f4)
    local base = math.max(0, seen)
    if old_iv ~= 0 and old_iv ~= iv and tat > base then
      tat = base + math.floor(math.min((tat - base) * iv / old_iv, MAX_DEBT))
      seen = base
      val = gcra_value(alg, tat, iv, seen)
      ttl = ttl_ms(tat)
    end
  end
  if tat < 0 then tat = 0 end
  local c = math.max(cost, 1)
  local new_tat = tat + c * iv
  local d = {0, 0, 0, 0, 0, 0}
  if c > burst then
    d[4] = -1
  elseif new_tat > tau then
    d[4] = new_tat - tau
  else
    d[1] = 1
    if alg == LB then d[5] = tat end
    if cost > 0 then
      tat = new_tat
      val = gcra_value(alg, tat, iv, math.max(seen, 0))
      ttl = ttl_ms(tat)
      d[6] = tat
    end
  end
  d[2] = math.max(0, idiv(tau - tat, iv))
  d[3] = tat
  return d, val, ttl
end

-- fixed_window counts in milliseconds, where every instant it compares is
-- exact in a double whatever the period (up to limit.MaxWindowPeriod, a
-- year): window starts are whole milliseconds. Its durations, reset and
-- retry, are returned as whole milliseconds from now_ms (the current
-- millisecond), which the caller turns into nanoseconds (minus the
-- nanoseconds now is past now_ms); its mark is the window start relative to
-- now_ms, in milliseconds.
local now_ms = now_s * 1000 + idiv(now_ns, 1e6)

local function fixed_window(f, lim, p, cost)
  local pm = p / 1e6
  local ws = idiv(now_ms, pm) * pm
  local count = 0
  if f and f[1] == FW then
    local s = f[2] * 1000 + idiv(f[3], 1e6)
    if s >= ws then ws, count = s, f[4] end
  end
  local d = {0, 0, 0, 0, 0, 0}
  local val, ttl
  local c = math.max(cost, 1)
  local left = ws + pm - now_ms -- ms until the window's end
  if c > lim then
    d[4] = -1
  elseif count + c > lim then
    d[4] = left
  else
    d[1] = 1
    if cost > 0 then
      count = count + cost
      val = string.format('%d %d %d %d', FW, idiv(ws, 1000), (ws - idiv(ws, 1000) * 1000) * 1e6, count)
      ttl = left + 1000
      d[6] = ws - now_ms
    end
  end
  d[2] = math.max(0, lim - count)
  if count > 0 then d[3] = left end
  return d, val, ttl
end

local function counter_reset(ws, p, curr, prev)
  if curr > 0 then return ws + 2 * p end
  if prev > 0 then return ws + p end
  return 0
end

local function sliding_counter(f, lim, p, cost)
  local ws = window_start(p)
  local curr, prev = 0, 0
  if f and f[1] == SWC then
    local s = rel(f[2], f[3])
    if s >= ws then
      ws, curr, prev = s, f[4], f[5]
    elseif s == ws - p then
      prev = f[4]
    end
  end
  local elapsed = math.max(0, -ws)
  local used = weigh(prev, p - elapsed, p) + curr
  local d = {0, 0, 0, 0, 0, 0}
  local val, ttl
  local c = math.max(cost, 1)
  if c > lim then
    d[4] = -1
  elseif used + c > lim then
    if curr + c <= lim then
      local e = first_passing(elapsed, p, function(e) return weigh(prev, p - e, p) + curr + c <= lim end)
      d[4] = ws + e
    else
      local e = first_passing(-1, p, function(e) return weigh(curr, p - e, p) + c <= lim end)
      d[4] = ws + p + e
    end
  else
    d[1] = 1
    if cost > 0 then
      curr = curr + cost
      used = used + cost
      val = string.format('%d %s %d %d', SWC, stamp(ws), curr, prev)
      ttl = ttl_ms(counter_reset(ws, p, curr, prev))
      d[6] = ws
    end
  end
  d[2] = math.max(0, lim - used)
  d[3] = counter_reset(ws, p, curr, prev)
  return d, val, ttl
end

-- The log is stored as "3 s1 ns1 c1 s2 ns2 c2 ...", oldest first.
local function sliding_log(f, lim, p, cost)
  local at, costs = {}, {}
  if f and f[1] == SWL then
    for i = 2, #f - 2, 3 do
      local t = rel(f[i], f[i + 1])
      if t > -p then -- entries at or before now-p have left the window
        at[#at + 1], costs[#costs + 1] = t, f[i + 2]
      end
    end
  end
  local sum = 0
  for i = 1, #costs do sum = sum + costs[i] end
  local d = {0, 0, 0, 0, 0, 0}
  local val, ttl
  local c = math.max(cost, 1)
  if c > lim then
    d[4] = -1
  elseif sum + c > lim then
    local need = sum + c - lim
    for i = 1, #costs do
      need = need - costs[i]
      if need <= 0 then d[4] = at[i] + p; break end
    end
  else
    d[1] = 1
    if cost > 0 then
      local t = 0
      if #at > 0 then t = math.max(0, at[#at]) end
      at[#at + 1], costs[#costs + 1] = t, cost
      sum = sum + cost
      local parts = {tostring(SWL)}
      for i = 1, #at do
        parts[#parts + 1] = stamp(at[i])
        parts[#parts + 1] = string.format('%d', costs[i])
      end
      val = table.concat(parts, ' ')
      ttl = ttl_ms(t + p)
      d[6] = t
    end
  end
  d[2] = math.max(0, lim - sum)
  if #at > 0 then d[3] = at[#at] + p end
  return d, val, ttl
end

-- Keys are read once and written once per call: a hot subject coalesced into
-- one batch costs one GET and one SET, however many checks it carries. cache
-- holds each key's current value (false: no key), pending its last write.
local cache, pending, order = {}, {}, {}

local repeats = ARGV[4] == '1'

local function read(key)
  if not repeats then return redis.call('GET', key) end
  local v = cache[key]
  if v == nil then
    v = redis.call('GET', key)
    cache[key] = v
  end
  return v
end

local function write(key, val, ttl)
  if not repeats then
    redis.call('SET', key, val, 'PX', ttl)
    return
  end
  cache[key] = val
  if pending[key] == nil then order[#order + 1] = key end
  pending[key] = ttl
end

local function step(key, alg, lim, p, burst, iv, cost)
  local v = read(key)
  if alg == TB or alg == LB then return gcra(v, alg, burst, iv, cost) end
  local f = nil
  if v then f = fields(v) end
  if alg == FW then return fixed_window(f, lim, p, cost) end
  if alg == SWC then return sliding_counter(f, lim, p, cost) end
  return sliding_log(f, lim, p, cost)
end

-- demand records a holder's report in the hash at key, one field per
-- holder ("<demand> <s> <ns>": until when it stands), drops the lapsed ones
-- and returns the sum of those that stand.
local function demand(key, holder, rate, for_ns)
  local es, ens = split(for_ns)
  redis.call('HSET', key, holder, string.format('%.17g %d %d', rate, es, ens))
  local all = redis.call('HGETALL', key)
  local sum = 0
  for i = 1, #all, 2 do
    local r, s, ns = string.match(all[i + 1], '^(%S+) (%-?%d+) (%d+)$')
    if r and rel(tonumber(s), tonumber(ns)) > 0 then
      sum = sum + tonumber(r)
    else
      redis.call('HDEL', key, all[i])
    end
  end
  redis.call('PEXPIRE', key, 60000)
  return sum
end

local out = {now_s, now_ns}
-- The rule table: each distinct rule once, as numbers.
local rule = {}
local a = 6 -- next ARGV index
for i = 1, tonumber(ARGV[5]) do
  rule[i] = {tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5] == '1'}
  a = a + 6
end

local function emit(d)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5], out[n + 6] = d[1], d[2], d[3], d[4], d[5], d[6]
end

local k = 1 -- next KEYS index
for _ = 1, tonumber(ARGV[3]) do
  local nrules = tonumber(ARGV[a])
  a = a + 1
  if nrules == 1 then
    -- One rule (the common case), without the tables a set needs: allowed
    -- or denied, its only possible write is its own (a consumption or a
    -- rescale).
    local r, cost = rule[tonumber(ARGV[a])], tonumber(ARGV[a + 1])
    local d, val, ttl
    if cost < 0 then
      -- A take: what a peek says the bucket holds, up to -cost. The
      -- second step reads the key as the peek did (a rescale of the peek
      -- is repeated, not written twice).
      d, val, ttl = step(KEYS[k], r[1], r[2], r[3], r[4], r[5], 0)
      local n = math.min(-cost, d[2])
      if n > 0 then
        d, val, ttl = step(KEYS[k], r[1], r[2], r[3], r[4], r[5], n)
        d[5] = n
      end
      d[3] = math.floor(demand(KEYS[k + 1], ARGV[a + 2], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])) * 1000)
      if val then write(KEYS[k], val, ttl) end
      k, a = k + 2, a + 5
    else
      d, val, ttl = step(KEYS[k], r[1], r[2], r[3], r[4], r[5], cost)
      if val then write(KEYS[k], val, ttl) end
      k, a = k + 1, a + 2
    end
    emit(d)
  else
    local rules, decisions, writes = {}, {}, {}
    local allowed = true
    for j = 1, nrules do
      local t = rule[tonumber(ARGV[a])]
      local r = {KEYS[k], t[1], t[2], t[3], t[4], t[5], tonumber(ARGV[a + 1])}
      rules[j] = r
      k, a = k + 1, a + 2
      local d, val, ttl = step(r[1], r[2], r[3], r[4], r[5], r[6], r[7])
      decisions[j] = d
      writes[j] = {val, ttl}
      if d[1] == 0 and not t[6] then allowed = false end
    end
    if not allowed then
      -- Denied: nothing is consumed. The rules that would have admitted it
      -- report a peek, whose only possible write is a rescale; the denying
      -- rules' writes are rescales too.
      for j = 1, nrules do
        local r = rules[j]
        if decisions[j][1] == 1 and r[7] > 0 then
          local d, val, ttl = step(r[1], r[2], r[3], r[4], r[5], r[6], 0)
          decisions[j] = d
          writes[j] = {val, ttl}
        end
      end
    end
    for j = 1, nrules do
      if writes[j][1] then write(rules[j][1], writes[j][1], writes[j][2]) end
    end
    for j = 1, nrules do emit(decisions[j]) end
  end
end
for _, key in ipairs(order) do
  redis.call('SET', key, cache[key], 'PX', pending[key])
end
return out
