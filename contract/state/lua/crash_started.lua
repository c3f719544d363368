-- Count an attempt of a job beginning (pv:crash:<task id>).
-- KEYS: crash hash. ARGV: TTL s. Returns {starts, lost, how} after counting this start.
local starts = redis.call('HINCRBY', KEYS[1], 'starts', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
local lost = tonumber(redis.call('HGET', KEYS[1], 'lost') or '0')
return {starts, lost, redis.call('HGET', KEYS[1], 'how') or ''}
