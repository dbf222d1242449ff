-- KEYS: each limit's keys in order (one, or two for a sliding log), all sharing one hash tag.
-- ARGV: 1 mode ('d' decide, 'r' refund), 2 cost, 3 counted_at (refund only), 4 nonce (unique
-- per call), 5 a fixed time (tests only; empty in production, where time is the server's),
-- then 6 per limit: algorithm, limit, period, burst, emission, refill (microseconds).
-- Returns for a decision: {allowed (0/1), retry_after, now, remaining_1, reset_after_1, ...}.
local cost = tonumber(ARGV[2])
local now = SERVER_NOW
local limits = {}
local next_key = 1
local count = (#ARGV - 5) / 6
for i = 1, count do
  local b = 5 + (i - 1) * 6
  local algo = ALGOS[ARGV[b + 1]]
  local keys = {}
  for k = 1, algo.keys do
    keys[k] = KEYS[next_key]
    next_key = next_key + 1
  end
  limits[i] = {
    algo = algo,
    keys = keys,
    limit = tonumber(ARGV[b + 2]),
    period = tonumber(ARGV[b + 3]),
    burst = tonumber(ARGV[b + 4]),
    emission = tonumber(ARGV[b + 5]),
    refill = tonumber(ARGV[b + 6]),
  }
end

if ARGV[1] == 'r' then
  local counted_at = tonumber(ARGV[3])
  for i = 1, count do limits[i].algo.refund(limits[i].keys, limits[i], now, counted_at, cost) end
  return {}
end

-- Every limit and the refund record use one time: the latest any state has moved to.
local states = {}
for i = 1, count do
  states[i] = limits[i].algo.load(limits[i].keys)
  now = limits[i].algo.latest(states[i], now)
end
local checks = {}
local allowed = true
for i = 1, count do
  checks[i] = limits[i].algo.check(states[i], limits[i], now, cost)
  if not checks[i][1] then allowed = false end
end
local retry = 0
if allowed then
  -- A cost of 0 only reads: nothing to write.
  if cost > 0 then
    for i = 1, count do limits[i].algo.commit(states[i], limits[i], now, cost) end
  end
else
  -- Nothing was spent: a limit that would have allowed reports its state as it is.
  for i = 1, count do
    if checks[i][1] then
      checks[i] = limits[i].algo.check(states[i], limits[i], now, 0)
    elseif checks[i][4] > retry then
      retry = checks[i][4]
    end
  end
end
local out = { allowed and 1 or 0, retry, now }
for i = 1, count do
  out[#out + 1] = checks[i][2]
  out[#out + 1] = checks[i][3]
end
return out
