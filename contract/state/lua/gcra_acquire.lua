-- GCRA: reserve the next slot of a shared rate limit, or refuse when the wait is too long.
-- KEYS[1] = TAT key (pv:ratelimit:<name>). ARGV: interval_us, burst, max_wait_us
-- (-1 = unbounded). Returns {granted (1|0), wait_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
local wait = allow_at - now
if wait < 0 then wait = 0 end
if max_wait >= 0 and wait > max_wait then
  return {0, wait}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat),
           'PX', math.floor((new_tat - now) / 1000) + 1000)
return {1, wait}
