-- Token bucket as GCRA: the state is the theoretical arrival time (TAT), one string per key.
-- Mirrors src/rate_limit/algorithm/gcra.rs.
ALGOS['tb'] = {
  keys = 1,
  load = function(keys)
    return { key = keys[1], tat = tonumber(redis.call('GET', keys[1])) or 0 }
  end,
  latest = function(st, now) return now end,
  check = function(st, q, now, cost)
    local capacity = q.burst * q.emission
    local base = math.max(st.tat, now)
    local new_tat = base + cost * q.emission
    local ahead = new_tat - now
    if ahead <= capacity then
      st.new_tat = new_tat
      return { true, math.floor((capacity - ahead) / q.emission), math.min(ahead, q.refill), 0 }
    end
    local used = base - now
    return { false, math.floor(math.max(capacity - used, 0) / q.emission), math.min(used, q.refill), ahead - capacity }
  end,
  commit = function(st, q, now, cost)
    redis.call('SET', st.key, int(st.new_tat), 'PX', ttl_until(st.new_tat))
  end,
  refund = function(keys, q, now, counted_at, cost)
    local tat = tonumber(redis.call('GET', keys[1]))
    if not tat then return end
    local refunded = math.max(tat - cost * q.emission, math.min(now, tat))
    if refunded <= now then
      redis.call('DEL', keys[1])
    else
      redis.call('SET', keys[1], int(refunded), 'PX', ttl_until(refunded))
    end
  end,
}
