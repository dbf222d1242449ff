-- The validator store's one script. KEYS[1]: the URI's hash, whose fields are
--   g          the path's generation, set by every write to more than any before it, even
--              across the key's expiry (absent: 0)
--   c          "1" once a write changed the resource: a conditional write whose variant holds
--              nothing stored since cannot be shown to hold
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
  redis.call('HSET', key, field, (now + ttl) .. '\n' .. ARGV[4])
  local most = tonumber(ARGV[5])
  local names = redis.call('HKEYS', key)
  local variants = {}
  for _, name in ipairs(names) do
    if string.sub(name, 1, 1) == 'v' and name ~= field then table.insert(variants, name) end
  end
  if #variants >= most then
    -- Expired ones first; if still too many, all others, and the path counts as lossy.
    local live = {}
    for _, name in ipairs(variants) do
      local expires = expiry(redis.call('HGET', key, name))
      if not expires or now >= expires then
        redis.call('HDEL', key, name)
      else
        table.insert(live, name)
      end
    end
    if #live >= most then
      for _, name in ipairs(live) do redis.call('HDEL', key, name) end
      redis.call('HSET', key, 'l', '1')
    end
  end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  return 1
elseif op == 'forget' then
  -- Past every generation before it, even one whose key has expired since (server ms).
  local g = math.max(generation() + 1, now)
  redis.call('DEL', key)
  redis.call('HSET', key, 'g', g, 'c', '1')
  redis.call('PEXPIRE', key, tonumber(ARGV[2]))
  return 1
end
return redis.error_reply('unknown operation')
