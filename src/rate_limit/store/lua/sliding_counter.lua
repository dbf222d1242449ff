-- Sliding window counter: one hash per key, s = current window start, c = its count,
-- p = the previous window's count. Mirrors sliding_counter.rs.
ALGOS['sc'] = {
  keys = 1,
  load = function(keys)
    local v = redis.call('HMGET', keys[1], 's', 'c', 'p')
    return { key = keys[1], s = tonumber(v[1]) or 0, c = tonumber(v[2]) or 0, p = tonumber(v[3]) or 0 }
  end,
  latest = function(st, now) return math.max(now, st.s) end,
  check = function(st, q, now, cost)
    local period = q.period
    local start = window_start(now, period)
    if start ~= st.s then
      if start == st.s + period then st.p = st.c else st.p = 0 end
      st.c = 0
      st.s = start
    end
    local elapsed = now - st.s
    local estimate = mul_div_ceil(st.p, period - elapsed, period) + st.c
    local after = estimate + cost
    local function reset_after(current)
      if current > 0 then return st.s + 2 * period - now end
      if st.p > 0 then return st.s + period - now end
      return 0
    end
    if after <= q.limit then
      return { true, q.limit - after, reset_after(st.c + cost), 0 }
    end
    -- Smallest elapsed time e at which ceil(previous * (period - e) / period) + current + cost fits.
    local function fits_at(previous, current)
      local room = q.limit - (current + cost)
      if room < 0 then return nil end
      if previous <= room then return 0 end
      local max_left = math.floor(room * period / previous)
      return period - max_left
    end
    local retry
    local e = fits_at(st.p, st.c)
    if e then
      if e > elapsed then retry = e - elapsed else retry = 1 end
    else
      local e2 = fits_at(st.c, 0)
      if e2 then retry = (st.s + period - now) + e2 else retry = st.s + 2 * period - now end
    end
    return { false, math.max(q.limit - estimate, 0), reset_after(st.c), retry }
  end,
  commit = function(st, q, now, cost)
    redis.call('HSET', st.key, 's', int(st.s), 'c', int(st.c + cost), 'p', int(st.p))
    redis.call('PEXPIRE', st.key, ttl_until(st.s + 2 * q.period))
  end,
  refund = function(keys, q, now, counted_at, cost)
    local v = redis.call('HMGET', keys[1], 's', 'c', 'p')
    local s, c, p = tonumber(v[1]), tonumber(v[2]), tonumber(v[3])
    if not (s and c and p) then return end
    local window = window_start(counted_at, q.period)
    if window == s then
      redis.call('HSET', keys[1], 'c', int(math.max(c - cost, 0)))
    elseif window + q.period == s then
      redis.call('HSET', keys[1], 'p', int(math.max(p - cost, 0)))
    end
  end,
}
