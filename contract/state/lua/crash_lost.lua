-- Count a pool child's death while it ran the job.
-- KEYS: crash hash. ARGV: TTL s, how. Returns the crashes so far, this one included.
local lost = redis.call('HINCRBY', KEYS[1], 'lost', 1)
redis.call('HSET', KEYS[1], 'how', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
local starts = tonumber(redis.call('HGET', KEYS[1], 'starts') or '0')
return math.max(lost, starts)
