-- Sliding window log: a sorted set per key, one member per unit of cost, scored by the time it
-- was admitted. An entry at t counts while now < t + period. Mirrors sliding_log.rs.
ALGOS['sl'] = {
  load = function(key)
    local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    return { key = key, newest = tonumber(newest[2]) }
  end,
  -- The log stays in time order even if the server clock steps back.
  latest = function(st, now)
    if st.newest and st.newest > now then return st.newest end
    return now
  end,
  check = function(st, q, now, cost)
    if not st.total then
      redis.call('ZREMRANGEBYSCORE', st.key, '-inf', int(now - q.period))
      st.total = redis.call('ZCARD', st.key)
      if st.total == 0 then st.newest = nil end
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
    if must_free <= st.total then
      local entry = redis.call('ZRANGE', st.key, must_free - 1, must_free - 1, 'WITHSCORES')
      retry = tonumber(entry[2]) + q.period - now
    end
    return { false, math.max(q.limit - st.total, 0), reset, retry }
  end,
  commit = function(key, st, q, now, cost)
    if cost <= 0 then return end
    local at = int(now)
    local done = 0
    while done < cost do
      local batch = {}
      local n = math.min(cost - done, 200)
      for i = 1, n do
        batch[#batch + 1] = at
        batch[#batch + 1] = at .. ':' .. NONCE .. ':' .. (done + i)
      end
      redis.call('ZADD', key, unpack(batch))
      done = done + n
    end
    redis.call('PEXPIRE', key, ttl_ms(q.period))
  end,
  refund = function(key, q, now, counted_at, cost)
    local expires = counted_at + q.period
    if expires <= now then return end
    -- The request's members are the first at or after its reading, all with one score.
    local first = redis.call('ZRANGEBYSCORE', key, int(counted_at), '(' .. int(expires), 'WITHSCORES', 'LIMIT', 0, 1)
    if #first == 0 then return end
    local score = first[2]
    local members = redis.call('ZRANGEBYSCORE', key, score, score, 'LIMIT', 0, cost)
    if #members > 0 then redis.call('ZREM', key, unpack(members)) end
  end,
}
