-- GCRA: how long the next slot of a shared rate limit is away, reserving nothing.
-- KEYS[1] = TAT key (pv:ratelimit:<name>). ARGV: interval_us, burst. Returns wait_us.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat + interval - burst * interval - now
if wait < 0 then wait = 0 end
return wait
