-- Sliding window log: a sorted set with one member per admitted request, `at:nonce:cost`,
-- scored by the time it was admitted, and a second key holding the total cost in the set.
-- An entry at t counts while now < t + period. Mirrors sliding_log.rs.
local function log_cost(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end

ALGOS['sl'] = {
  keys = 2,
  load = function(keys)
    local newest = redis.call('ZRANGE', keys[1], -1, -1, 'WITHSCORES')
    return { key = keys[1], total_key = keys[2], newest = tonumber(newest[2]) }
  end,
  -- The log stays in time order even if the server clock steps back.
  latest = function(st, now)
    if st.newest and st.newest > now then return st.newest end
    return now
  end,
  check = function(st, q, now, cost)
    if not st.total then
      -- Forget what left the window (at + period <= now), subtracting its cost.
      local cutoff = int(now - q.period)
      local gone = redis.call('ZRANGEBYSCORE', st.key, '-inf', cutoff)
      local total = tonumber(redis.call('GET', st.total_key)) or 0
      if #gone > 0 then
        for _, member in ipairs(gone) do total = total - log_cost(member) end
        redis.call('ZREMRANGEBYSCORE', st.key, '-inf', cutoff)
        if total <= 0 or redis.call('EXISTS', st.key) == 0 then
          total = 0
          redis.call('DEL', st.total_key)
        else
          redis.call('SET', st.total_key, int(total), 'KEEPTTL')
        end
      end
      st.total = total
      if total == 0 then st.newest = nil end
    end
    local after = st.total + cost
    local reset = 0
    if st.newest then reset = st.newest + q.period - now end
    if after <= q.limit then
      if cost > 0 then reset = q.period end
      return { true, q.limit - after, reset, 0 }
    end
    -- Wait until enough of the oldest entries expire to make room for `cost`.
    local must_free = after - q.limit
    local retry = q.period
    local index = 0
    while must_free > 0 do
      local batch = redis.call('ZRANGE', st.key, index, index + 99, 'WITHSCORES')
      if #batch == 0 then break end
      for j = 1, #batch, 2 do
        must_free = must_free - log_cost(batch[j])
        if must_free <= 0 then
          retry = tonumber(batch[j + 1]) + q.period - now
          break
        end
      end
      index = index + 100
    end
    return { false, math.max(q.limit - st.total, 0), reset, retry }
  end,
  commit = function(st, q, now, cost)
    local at = int(now)
    redis.call('ZADD', st.key, at, at .. ':' .. NONCE .. ':' .. int(cost))
    redis.call('PEXPIRE', st.key, ttl_until(now + q.period))
    redis.call('SET', st.total_key, int(st.total + cost), 'PX', ttl_until(now + q.period))
  end,
  refund = function(keys, q, now, counted_at, cost)
    local expires = counted_at + q.period
    if expires <= now then return end
    -- The request's entry is among the first at or after its reading; requests admitted in the
    -- same microsecond share that time, and are given back from together, as in memory.
    local first = redis.call('ZRANGEBYSCORE', keys[1], int(counted_at), '(' .. int(expires), 'WITHSCORES', 'LIMIT', 0, 1)
    if #first == 0 then return end
    local score = first[2]
    local left = cost
    local given = 0
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', keys[1], score, score)) do
      if left <= 0 then break end
      local c = log_cost(member)
      local take = math.min(c, left)
      redis.call('ZREM', keys[1], member)
      if c > take then
        local prefix = string.match(member, '^(.*):%d+$')
        redis.call('ZADD', keys[1], score, prefix .. ':' .. int(c - take))
      end
      left = left - take
      given = given + take
    end
    if given > 0 then
      local total = (tonumber(redis.call('GET', keys[2])) or 0) - given
      if total <= 0 then
        redis.call('DEL', keys[2])
      else
        redis.call('SET', keys[2], int(total), 'KEEPTTL')
      end
    end
  end,
}
