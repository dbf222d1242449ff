-- tower-bulwark rate limiting: shared helpers. Times are microseconds of the Redis server's
-- clock (TIME); counts and times stay below 2^53 (the builder checks), so Lua's doubles hold
-- them exactly.
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

-- The server's own time, or a fixed one (ARGV[5], tests only). Algorithms may move their
-- working time forward past a stored window (a clock that stepped back), but every TTL is
-- computed from this reading, so a key never expires before what it holds does.
-- (Redis < 5 must be told to replicate effects before a script may write after TIME.)
if redis.replicate_commands then redis.replicate_commands() end
local SERVER_NOW
-- Expiry only collects garbage (every algorithm reads stale state correctly), so under a fixed
-- time, which real time does not move, keys are kept for a minute whatever their window.
local TTL_FLOOR_MS = 1
if ARGV[5] ~= '' then
  SERVER_NOW = tonumber(ARGV[5])
  TTL_FLOOR_MS = 60000
else
  local t = redis.call('TIME')
  SERVER_NOW = tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- A TTL in milliseconds for something that ends at `expiry` (server microseconds), >= 1 ms.
local function ttl_until(expiry)
  local ms = math.ceil((expiry - SERVER_NOW) / 1000)
  if ms < TTL_FLOOR_MS then ms = TTL_FLOOR_MS end
  return int(ms)
end

-- Each algorithm registers: keys (how many KEYS it takes), load(keys) -> state,
-- latest(state, now) -> now, check(state, q, now, cost) -> {allowed, remaining, reset_after,
-- retry_after}, commit(state, q, now, cost), refund(keys, q, now, counted_at, cost).
local ALGOS = {}

-- Unique per call: names this request's sliding-log entry.
local NONCE = ARGV[4]
