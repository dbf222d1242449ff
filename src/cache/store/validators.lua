-- The validator store's one script. KEYS[1]: the URI's hash, whose fields are
--   g          the URI's generation, bumped by every write (absent: 0)
--   c          "1" while a write changed the resource and no read has stored since
--   l          "1" once a live variant was dropped to make room (a write whose variant is
--              missing then cannot be shown to hold)
--   v<variant> "<expires ms>\n<headers>", one per variant (by Vary)
-- ARGV[1] is the operation:
--   get    ARGV[2] variant -> {generation, changed (0/1), headers or false}
--   put    ARGV[2] variant, ARGV[3] ttl ms, ARGV[4] headers, ARGV[5] max variants,
--          ARGV[6] the generation the read saw -> 1, or 0 if written since
--   forget ARGV[2] how long the URI stays "changed" (ms) -> 1
-- Times are the server's (TIME): instances' clocks never meet here.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
local op = ARGV[1]

local function expiry(value)
  return tonumber(string.match(value, '^(%d+)\n'))
end

local function generation()
  return tonumber(redis.call('HGET', key, 'g') or '0') or 0
end

if op == 'get' then
  local g = generation()
  local changed = (redis.call('HGET', key, 'c') or redis.call('HGET', key, 'l')) and 1 or 0
  local value = redis.call('HGET', key, 'v' .. ARGV[2])
  if value then
    local expires = expiry(value)
    if expires and now < expires then
      return {g, changed, string.sub(value, string.find(value, '\n', 1, true) + 1)}
    end
  end
  return {g, changed, false}
elseif op == 'put' then
  if generation() ~= tonumber(ARGV[6]) then return 0 end
  local ttl = tonumber(ARGV[3])
  local field = 'v' .. ARGV[2]
  redis.call('HDEL', key, 'c')
  redis.call('HSET', key, field, (now + ttl) .. '\n' .. ARGV[4])
  -- The fields beside the variants: g, and l once set.
  local most = tonumber(ARGV[5]) + 2
  if redis.call('HLEN', key) > most then
    local all = redis.call('HGETALL', key)
    for i = 1, #all, 2 do
      local name = all[i]
      if string.sub(name, 1, 1) == 'v' and name ~= field then
        local expires = expiry(all[i + 1])
        if not expires or now >= expires then redis.call('HDEL', key, name) end
      end
    end
    -- Still too many live variants: keep only this one.
    if redis.call('HLEN', key) > most then
      redis.call('HSET', key, 'l', '1')
      for i = 1, #all, 2 do
        if string.sub(all[i], 1, 1) == 'v' and all[i] ~= field then redis.call('HDEL', key, all[i]) end
      end
    end
  end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  return 1
elseif op == 'forget' then
  local g = generation() + 1
  redis.call('DEL', key)
  redis.call('HSET', key, 'g', g, 'c', '1')
  redis.call('PEXPIRE', key, tonumber(ARGV[2]))
  return 1
end
return redis.error_reply('unknown operation')
