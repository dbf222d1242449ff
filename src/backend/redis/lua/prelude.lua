-- tower-bulwark rate limiting: shared helpers. Times are microseconds of the Redis server's
-- clock (TIME); counts and times stay below 2^53, so Lua's doubles hold them exactly.
local function int(x)
  -- redis.call would format a large number as 1.7e+15 and lose digits: always write integers.
  return string.format('%.0f', x)
end

local function window_start(now, period)
  return now - (now % period)
end

-- ceil(a * b / d) without trusting a rounded division.
local function mul_div_ceil(a, b, d)
  local p = a * b
  local q = math.floor(p / d)
  if q * d < p then q = q + 1 end
  return q
end

-- A TTL in milliseconds for something that matters for `us` more microseconds (at least 1 ms).
local function ttl_ms(us)
  local ms = math.ceil(us / 1000)
  if ms < 1 then ms = 1 end
  return int(ms)
end

-- Each algorithm registers: load(key) -> state, latest(state, now) -> now,
-- check(state, q, now, cost) -> {allowed, remaining, reset_after, retry_after},
-- commit(key, state, q, now, cost), refund(key, q, now, counted_at, cost).
local ALGOS = {}

-- Unique per call: tells apart sliding-log entries admitted in the same microsecond.
local NONCE = ARGV[4]
