-- A retry budget shared by a fleet: one hash, `{prefix:global}:rb`, moved by one call per
-- instance per sync (tower-bulwark, src/retry/budget/budget.lua).
--
-- Fields: `d<slot>` and `w<slot>` hold the fleet's deposits (requests) and withdrawals
-- (retries) in one slot of time. `i<instance>` holds what that instance has reported so far
-- and what it holds: `deposits,withdrawals,seen_us,grant,weight`. Each call adds what the
-- instance did since its last report to the current slot, forgets slots older than the
-- window and instances not heard from for `live_us`, and grants the instance a new share.
--
-- Shares are leases: what the fleet has left is the window's allowance less its withdrawals
-- less every other instance's grant (which it may be spending now, unreported). An
-- instance's share is its weight's part of the allowance left (weight: its requests over the
-- window, plus one so that a quiet fleet splits the floor evenly), and never more than is
-- not granted to the others. So reported and granted retries together never exceed the
-- allowance.
--
-- KEYS[1]   the hash
-- ARGV[1]   the instance's name
-- ARGV[2]   its running total of deposits
-- ARGV[3]   its running total of withdrawals
-- ARGV[4]   deposits as of its last report Redis answered (used when the hash forgot it)
-- ARGV[5]   withdrawals as of that report
-- ARGV[6]   its deposits over the window (its weight)
-- ARGV[7]   the length of a slot, in microseconds
-- ARGV[8]   slots per window
-- ARGV[9]   the hash's TTL, in milliseconds
-- ARGV[10]  how long an instance counts after its last report, in microseconds
-- ARGV[11]  the ratio of requests that may be retried
-- ARGV[12]  the floor: retries per window whatever the traffic
-- ARGV[13]  a fixed time in microseconds, for tests; empty: the server's clock
--
-- Reply: {deposits, withdrawals, instances, grant}, the first three over the window.

local key = KEYS[1]
local me = 'i' .. ARGV[1]
local deposits, withdrawals = tonumber(ARGV[2]), tonumber(ARGV[3])
local weight = tonumber(ARGV[6])
local slot_us, slots, ttl_ms = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local live_us, ratio, floor = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])

local now_us
if ARGV[13] ~= '' then
  now_us = tonumber(ARGV[13])
else
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local slot = math.floor(now_us / slot_us)
local oldest = slot - slots + 1
local function text(n) return string.format('%.0f', n) end

-- What this instance reported before: the hash's record, or its own acknowledged totals
-- when the hash has forgotten it (expired, flushed): never its whole history twice.
local last_d, last_w = tonumber(ARGV[4]), tonumber(ARGV[5])
local record = redis.call('HGET', key, me)
if record then
  local d, w = string.match(record, '^(%d+),(%d+),')
  if d then last_d, last_w = tonumber(d), tonumber(w) end
end
local new_d, new_w = deposits - last_d, withdrawals - last_w
if new_d > 0 then redis.call('HINCRBY', key, 'd' .. text(slot), new_d) end
if new_w > 0 then redis.call('HINCRBY', key, 'w' .. text(slot), new_w) end

local total_d, total_w, instances = 0, 0, 1
local others_granted, weights = 0, weight + 1
local stale = {}
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local field, value = fields[i], fields[i + 1]
  local kind = string.sub(field, 1, 1)
  if kind == 'i' then
    local seen, grant, w = string.match(value, ',(%d+),(%d+),(%d+)$')
    if seen == nil or tonumber(seen) + live_us < now_us then
      stale[#stale + 1] = field
    elseif field ~= me then
      instances = instances + 1
      others_granted = others_granted + tonumber(grant)
      weights = weights + tonumber(w) + 1
    end
  else
    local at = tonumber(string.sub(field, 2))
    if at == nil or at < oldest then
      stale[#stale + 1] = field
    elseif kind == 'd' then
      total_d = total_d + tonumber(value)
    elseif kind == 'w' then
      total_w = total_w + tonumber(value)
    end
  end
end
if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end

local left = math.max(0, floor + math.floor(total_d * ratio) - total_w)
local grant = math.floor(left * (weight + 1) / weights)
grant = math.max(0, math.min(grant, left - others_granted))
-- A late copy of an older report never moves the record back.
redis.call('HSET', key, me, text(math.max(deposits, last_d)) .. ',' ..
  text(math.max(withdrawals, last_w)) .. ',' .. text(now_us) .. ',' .. text(grant) .. ',' ..
  text(weight))
redis.call('PEXPIRE', key, ttl_ms)
return {total_d, total_w, instances, grant}
