-- tower-bulwark circuit breaker: the fleet's one state machine for one key, in one hash.
-- Every instance calls this on its sync interval with the outcomes it saw since its last call;
-- the script folds them in, moves the state, hands out the half-open probe lease, and answers
-- with the state every instance then follows. Times are microseconds of the server's clock.
--
-- KEYS[1]: the hash `{prefix:key}:cb`.
-- ARGV:  1 instance id, 2 generation the outcomes were seen under ('' = not known yet),
--        3 calls, 4 failures, 5 slow, 6 good (neither failure nor slow) (3-6 and 9: running
--        totals of the instance's circuit), 7 the instance's current run of bad calls,
--        8 tripped here (1/0), 9 probe successes, 10 a probe failed
--        (1/0), 11 the probe lease: '1' want it, '0' keep it if held, 'r' give it back,
--        12 policy ('c' consecutive, 'n' count window, 't' time window), 13 failures in a row
--        or failure rate, 14 minimum calls, 15 window size (calls, or period in µs), 16 slow
--        rate (0: none), 17 open time µs, 18 half-open successes to close, 19 lease µs,
--        20 key TTL ms, 21 a fixed time (tests only; '' in production), 22 the totals of
--        ARGV 3-6 and 9 this instance last saw counted ('c,f,s,g,p'; for when the hash lost
--        them).
-- Fields: st (0 closed, 1 open, 2 half-open), g (generation: +1 on every change), u (open
--        until), c (bad calls in a row), n/f/s (count window), e<i>/n<i>/f<i>/s<i> (ten time
--        buckets), hs (probe successes), l/lu (lease holder and its end), t:<id> (each
--        instance's last totals and when it sent them: what it reports is counted once,
--        even when a reply that came too late makes it send the same outcomes again), g0
--        (the generation the hash was made with).
-- Returns {state, generation, open time left µs, lease time left µs (0: not this
-- instance's)}.
if redis.replicate_commands then redis.replicate_commands() end
local A = ARGV
local now
if A[21] ~= '' then
  now = tonumber(A[21])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function num(x) return tonumber(x) or 0 end

local me = 't:' .. A[1]
local totals = { num(A[3]), num(A[4]), num(A[5]), num(A[6]), num(A[9]) }

-- This instance's last totals: as stored, or, if the hash lost them (or forgot a quiet
-- instance), as the instance last saw them counted (never its totals since it began:
-- counted already).
local function last_totals(stored)
  local last = {}
  for x in string.gmatch(stored or A[22] or '', '[^,]+') do last[#last + 1] = tonumber(x) end
  return last
end

-- The quiet path, the usual one for a key at rest: nothing new to tell (no outcome, no trip,
-- no failed probe) about a state that is closed, or open and not yet over. Read, renew the
-- TTL, write nothing. (The instance's stored totals keep their old time: if it stays quiet
-- for a TTL they are forgotten, and its next report counts from what it last saw counted.)
if A[8] ~= '1' and A[10] ~= '1' then
  local q = redis.call('HMGET', KEYS[1], 'st', 'g', 'u', me)
  if q[1] then
    local last = last_totals(q[4])
    local quiet = true
    for i = 1, 5 do
      if totals[i] ~= (last[i] or 0) then quiet = false end
    end
    local qst, qu = num(q[1]), num(q[3])
    if quiet and (qst == 0 or (qst == 1 and now < qu)) then
      redis.call('PEXPIRE', KEYS[1], A[20])
      local left = 0
      if qst == 1 then left = qu - now end
      return { qst, num(q[2]), left, 0 }
    end
  end
end

local f = {}
local raw = redis.call('HGETALL', KEYS[1])
for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
local st, g, til = num(f.st), num(f.g), num(f.u)
-- A new hash (first use, or lost: a Redis restarted empty, a failover, an eviction) starts at
-- a generation above any earlier hash's (generations start at the server time in µs and
-- move by one per change), and takes a report seen under an earlier hash as current: a
-- trip made while it was away must not be dropped as stale.
if #raw == 0 then
  g = now
  f.g0 = now
end
local g0 = num(f.g0)

-- This instance's outcomes since its last report: its totals less the last ones counted.
local last = last_totals(f[me])
local d = {}
for i = 1, 5 do
  d[i] = totals[i] - (last[i] or 0)
  if d[i] < 0 then d[i] = 0 end
end
-- Instances gone quiet for a TTL are forgotten.
local ttl_us = num(A[20]) * 1000
for k, v in pairs(f) do
  if string.sub(k, 1, 2) == 't:' and k ~= me then
    local seen = tonumber(string.match(v, '([^,]+)$')) or 0
    if seen < now - ttl_us then f[k] = nil end
  end
end

-- A new state starts with nothing counted: what was counted belongs to the state left (the
-- instances' last totals stay: they are what the next reports are measured from).
local function enter(state)
  st = state
  g = g + 1
  local kept = { g0 = f.g0 }
  for k, v in pairs(f) do
    if string.sub(k, 1, 2) == 't:' then kept[k] = v end
  end
  f = kept
  til = 0
  if state == 1 then til = now + num(A[17]) end
end

if st == 1 and now >= til then enter(2) end

-- Outcomes seen under an older generation belong to a state the fleet has left. A circuit
-- that has not heard from the fleet yet (new, or only just keyed) counts in the current one.
if A[2] == '' or num(A[2]) == g or num(A[2]) < g0 then
  if st == 0 then
    local trip = A[8] == '1'
    local calls, fails, slow, good = d[1], d[2], d[3], d[4]
    local policy = A[12]
    if policy == 'c' then
      -- A good call since the last sync ended the fleet's run: what follows it is this
      -- instance's own run.
      local c = num(f.c) + calls - good
      if good > 0 then c = num(A[7]) end
      f.c = c
      if c >= num(A[13]) then trip = true end
    elseif calls > 0 then
      local n, nf, ns
      if policy == 'n' then
        -- The last `size` calls, kept as totals scaled down once over: the fleet's calls
        -- arrive in batches, not in order.
        local size = num(A[15])
        n, nf, ns = num(f.n) + calls, num(f.f) + fails, num(f.s) + slow
        if n > size then
          local k = size / n
          n, nf, ns = size, nf * k, ns * k
        end
        f.n, f.f, f.s = n, nf, ns
      else
        -- Ten buckets, each a tenth of the period, as the in-memory time window.
        local width = math.max(1, math.floor(num(A[15]) / 10))
        local cur = math.floor(now / width)
        local i = cur % 10
        if num(f['e' .. i]) ~= cur then
          f['e' .. i], f['n' .. i], f['f' .. i], f['s' .. i] = cur, 0, 0, 0
        end
        f['n' .. i] = num(f['n' .. i]) + calls
        f['f' .. i] = num(f['f' .. i]) + fails
        f['s' .. i] = num(f['s' .. i]) + slow
        n, nf, ns = 0, 0, 0
        for j = 0, 9 do
          if f['e' .. j] ~= nil and num(f['e' .. j]) > cur - 10 then
            n = n + num(f['n' .. j])
            nf = nf + num(f['f' .. j])
            ns = ns + num(f['s' .. j])
          end
        end
      end
      local slow_rate = num(A[16])
      if n >= num(A[14]) and (nf / n >= num(A[13]) or (slow_rate > 0 and ns / n >= slow_rate)) then
        trip = true
      end
    end
    if trip then enter(1) end
  elseif st == 2 then
    if A[10] == '1' then
      enter(1)
    else
      f.hs = num(f.hs) + d[5]
      if f.hs >= num(A[18]) then
        enter(0)
        -- Closed here by its probes, the instance tripped again before this sync.
        if A[8] == '1' then enter(1) end
      end
    end
  end
end

-- Half-open: one instance at a time holds the lease to probe, renewed at each of its syncs
-- while it has calls to probe (ARGV 11 '1'), kept unrenewed while it has none ('0'), given
-- back when it leaves half-open ('r'); the fleet's probes in flight are bounded by the one
-- holder's bound.
local lease_left = 0
if st == 2 then
  local held = f.l == A[1] and num(f.lu) > now
  if A[11] == '1' then
    if f.l == nil or f.l == A[1] or num(f.lu) <= now then
      f.l, f.lu = A[1], now + num(A[19])
      lease_left = num(A[19])
    end
  elseif A[11] == '0' then
    -- Kept, not renewed: the holder may probe only for what is left of it.
    if held then lease_left = num(f.lu) - now end
  elseif f.l == A[1] then
    f.l, f.lu = nil, nil
  end
end

f.st, f.g, f.u = st, g, til
-- '%.0f': tostring would write a large number as 1.7e+15 and lose digits.
f[me] = string.format('%.0f,%.0f,%.0f,%.0f,%.0f,%.0f', totals[1], totals[2], totals[3], totals[4],
  totals[5], now)
redis.call('DEL', KEYS[1])
local args = {}
for k, v in pairs(f) do
  args[#args + 1] = k
  if type(v) == 'number' then v = string.format('%.17g', v) end
  args[#args + 1] = v
end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('PEXPIRE', KEYS[1], A[20])
local left = 0
if st == 1 then left = til - now end
return { st, g, left, lease_left }
