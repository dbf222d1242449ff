-- Token bucket as GCRA: the state is the theoretical arrival time (TAT), one string per key.
-- Mirrors src/rate_limit/algorithm/gcra.rs.
ALGOS['tb'] = {
  load = function(key)
    return { tat = tonumber(redis.call('GET', key)) or 0 }
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
  commit = function(key, st, q, now, cost)
    redis.call('SET', key, int(st.new_tat), 'PX', ttl_ms(st.new_tat - now))
  end,
  refund = function(key, q, now, counted_at, cost)
    local tat = tonumber(redis.call('GET', key))
    if not tat then return end
    local refunded = math.max(tat - cost * q.emission, math.min(now, tat))
    if refunded <= now then
      redis.call('DEL', key)
    else
      redis.call('SET', key, int(refunded), 'PX', ttl_ms(refunded - now))
    end
  end,
}
