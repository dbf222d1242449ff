-- Fixed window: one hash per key, s = window start, c = count. Mirrors fixed_window.rs.
ALGOS['fw'] = {
  keys = 1,
  load = function(keys)
    local v = redis.call('HMGET', keys[1], 's', 'c')
    return { key = keys[1], s = tonumber(v[1]) or 0, c = tonumber(v[2]) or 0 }
  end,
  -- Windows only move forward: a reading older than the stored window counts in it.
  latest = function(st, now) return math.max(now, st.s) end,
  check = function(st, q, now, cost)
    local start = window_start(now, q.period)
    if start ~= st.s then st.s = start; st.c = 0 end
    local reset = st.s + q.period - now
    local after = st.c + cost
    if after <= q.limit then
      return { true, q.limit - after, reset, 0 }
    end
    return { false, math.max(q.limit - st.c, 0), reset, reset }
  end,
  commit = function(st, q, now, cost)
    redis.call('HSET', st.key, 's', int(st.s), 'c', int(st.c + cost))
    redis.call('PEXPIRE', st.key, ttl_until(st.s + q.period))
  end,
  refund = function(keys, q, now, counted_at, cost)
    local v = redis.call('HMGET', keys[1], 's', 'c')
    local s, c = tonumber(v[1]), tonumber(v[2])
    if s and c and window_start(counted_at, q.period) == s then
      redis.call('HSET', keys[1], 'c', int(math.max(c - cost, 0)))
    end
  end,
}
