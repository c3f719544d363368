-- GCRA: push the shared next-allowed time to at least now + penalty (for everyone).
-- KEYS[1] = TAT key. ARGV: penalty_us, interval_us, burst. Returns the new TAT - now (us).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local penalty = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
-- the next grant happens at (max(tat, now) + interval - burst * interval): make it >= now+penalty
local floor_tat = now + penalty + (burst - 1) * interval
if tat < floor_tat then tat = floor_tat end
redis.call('SET', KEYS[1], string.format('%d', tat),
           'PX', math.floor((tat - now) / 1000) + 1000)
return tat - now
