-- The validator store's one script. KEYS[1]: the URI's hash, whose fields are
--   q          the end of its quarantine (server ms): no new validators before it
--   v<variant> "<expires ms>\n<headers>", one per variant (by Vary)
-- ARGV[1] is the operation:
--   get    ARGV[2] variant                         -> the headers, or false
--   put    ARGV[2] variant, ARGV[3] ttl ms, ARGV[4] headers, ARGV[5] max variants -> 1, or 0 in quarantine
--   forget ARGV[2] quarantine ms                   -> 1
-- Times are the server's (TIME): instances' clocks never meet here.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key = KEYS[1]
local op = ARGV[1]

local function expiry(value)
  return tonumber(string.match(value, '^(%d+)\n'))
end

if op == 'get' then
  local value = redis.call('HGET', key, 'v' .. ARGV[2])
  if not value then return false end
  local expires = expiry(value)
  if not expires or now >= expires then return false end
  return string.sub(value, string.find(value, '\n', 1, true) + 1)
elseif op == 'put' then
  local quarantine = tonumber(redis.call('HGET', key, 'q') or '0') or 0
  if now < quarantine then return 0 end
  local ttl = tonumber(ARGV[3])
  local field = 'v' .. ARGV[2]
  redis.call('HSET', key, field, (now + ttl) .. '\n' .. ARGV[4])
  local most = tonumber(ARGV[5]) + 1
  if redis.call('HLEN', key) > most then
    local all = redis.call('HGETALL', key)
    for i = 1, #all, 2 do
      local name = all[i]
      if name ~= 'q' and name ~= field then
        local expires = expiry(all[i + 1])
        if not expires or now >= expires then redis.call('HDEL', key, name) end
      end
    end
    -- Still too many live variants: keep only this one.
    if redis.call('HLEN', key) > most then
      for i = 1, #all, 2 do
        if all[i] ~= 'q' and all[i] ~= field then redis.call('HDEL', key, all[i]) end
      end
    end
  end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  return 1
elseif op == 'forget' then
  redis.call('DEL', key)
  local quarantine = tonumber(ARGV[2])
  if quarantine > 0 then
    redis.call('HSET', key, 'q', now + quarantine)
    redis.call('PEXPIRE', key, quarantine)
  end
  return 1
end
return redis.error_reply('unknown operation')
