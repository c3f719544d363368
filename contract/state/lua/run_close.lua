-- Close one run: compact it (drop its state hash) and let its keys expire.
-- KEYS: meta, counts, state, failures, jobs, lost (then any other keys of the run).
-- ARGV: TTL in s (0: never expire), `changed_at` as read when the run was judged
-- finished, compact ("1": drop the state hash; only when nothing is queued).
-- Atomic, and O(1) whatever the run's size: UNLINK frees the hash in the background.
-- Refuses (0) when the run changed since it was judged, or (compact) has jobs queued.
local compact = ARGV[3] == '1'
if compact and (tonumber(redis.call('HGET', KEYS[2], 'queued')) or 0) > 0 then return 0 end
if (redis.call('HGET', KEYS[1], 'changed_at') or '') ~= ARGV[2] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = tonumber(redis.call('TIME')[1])
if compact then
  -- nothing is queued, so jobs and lost are empty but for a race lost to a redelivery
  redis.call('UNLINK', KEYS[3], KEYS[5], KEYS[6])
  if redis.call('HEXISTS', KEYS[1], 'compacted_at') == 0 then
    redis.call('HSET', KEYS[1], 'compacted_at', now)
  end
end
redis.call('HSET', KEYS[1], 'closed_at', now)
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  redis.call('HSET', KEYS[1], 'expires_at', now + ttl)
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
end
return 1
