-- refund.lua: give back what apply.lua consumed for a check that other
-- parts of the same request, in other Redis Cluster slots, denied.
--
-- This is a transcription of limit.Rule.Refund (limit/parts.go), which states
-- the model and its bound: counts and log entries come off exactly; a bucket's
-- TAT goes back by what was consumed, never below what the history without
-- that consumption holds.
--
-- ARGV[1], ARGV[2]: the instant apply.lua consumed at, as Unix seconds and
--                   nanoseconds (its first two return values).
-- ARGV[3]:          T, the number of distinct rules; then T times:
--                     algorithm, limit, period_ns, burst, interval_ns, shadow
--                     (as apply.lua's; shadow is not used)
-- Then, per key:      an index (1-based) into that rule table, the cost that
--                     was consumed, and its mark_ns (apply.lua's, relative
--                     to the instant).
-- KEYS:             the keys that consumed.
--
-- Instants are compared relative to the consumption's instant, where the
-- differences are small enough for Lua's doubles to hold exactly. A key keeps
-- its time to live: a refund only gives back, so the key's expiry still
-- covers it. Returns the number of keys changed.

local TB, LB, SWL, SWC, FW = 1, 2, 3, 4, 5

local at_s, at_ns = tonumber(ARGV[1]), tonumber(ARGV[2])

-- floor(a / b) for integers, exact even where the double quotient rounds.
local function idiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end

-- rel: an instant stored as seconds + nanoseconds, relative to the
-- consumption's instant, in ns.
local function rel(s, ns) return (s - at_s) * 1e9 + (ns - at_ns) end

-- stamp: the instant at + r, formatted "seconds nanoseconds".
local function stamp(r)
  local x = at_ns + r
  local q = idiv(x, 1e9)
  return string.format('%d %d', at_s + q, x - q * 1e9)
end

local function fields(v)
  local f = {}
  for x in string.gmatch(v, '%S+') do f[#f + 1] = tonumber(x) end
  return f
end

-- refund returns the key's new value, or nil when nothing is given back.
local function refund(v, alg, p, iv, cost, mark)
  local f = fields(v)
  if f[1] ~= alg then return nil end
  if alg == TB or alg == LB then
    -- "<alg> <TAT s ns> <interval> <latest write s ns>"
    if #f < 6 or f[4] ~= iv then return nil end
    local tat, seen = rel(f[2], f[3]), rel(f[5], f[6])
    if seen >= mark or tat < mark then return nil end
    tat = math.max(tat - cost * iv, seen + (tat - mark))
    return string.format('%d %s %d %s', alg, stamp(tat), iv, stamp(seen))
  elseif alg == FW then
    -- "5 <window start s ns> <count>"; its mark is the window start
    -- relative to the consumption's millisecond, in milliseconds.
    local at_ms = at_s * 1000 + idiv(at_ns, 1e6)
    if f[2] * 1000 + idiv(f[3], 1e6) ~= at_ms + mark then return nil end
    return string.format('%d %d %d %d', FW, f[2], f[3], math.max(0, f[4] - cost))
  elseif alg == SWC then
    -- "4 <window start s ns> <count> <previous count>"
    local ws = rel(f[2], f[3])
    if ws == mark then
      return string.format('%d %s %d %d', SWC, stamp(ws), math.max(0, f[4] - cost), f[5])
    elseif ws == mark + p then
      return string.format('%d %s %d %d', SWC, stamp(ws), f[4], math.max(0, f[5] - cost))
    end
    return nil
  end
  -- "3 s1 ns1 c1 s2 ns2 c2 ...": the last entry at mark of that cost goes.
  for i = #f - 2, 2, -3 do
    if rel(f[i], f[i + 1]) == mark and f[i + 2] == cost then
      local parts = {tostring(SWL)}
      for j = 2, #f - 2, 3 do
        if j ~= i then
          parts[#parts + 1] = string.format('%d %d %d', f[j], f[j + 1], f[j + 2])
        end
      end
      return table.concat(parts, ' ')
    end
  end
  return nil
end

local rule = {}
local a = 4 -- next ARGV index
for i = 1, tonumber(ARGV[3]) do
  rule[i] = {tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])}
  a = a + 6
end
local changed = 0
for k = 1, #KEYS do
  local r = rule[tonumber(ARGV[a])]
  local cost, mark = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local v = redis.call('GET', KEYS[k])
  if v then
    local nv = refund(v, r[1], r[3], r[5], cost, mark)
    if nv then
      redis.call('SET', KEYS[k], nv, 'KEEPTTL')
      changed = changed + 1
    end
  end
end
return changed
