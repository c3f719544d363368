-- Trim a reducer's batch off the head of pv:ready, only while the reducer lock is ours.
-- The trim also checks that the head of the queue still is the batch: trimming "the first
-- n entries" again would drop the next batch unindexed, and that is what the client's
-- retry does when Redis executed the trim but its reply was lost (Redis stopping, a
-- dropped connection). A retried trim finds another head and leaves it alone.
-- KEYS: lock, ready queue. ARGV: token, then the batch's entries in queue order.
-- Returns 1 trimmed, 0 the lock is not ours, -1 the head is not (any more) this batch.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local n = #ARGV - 1
local head = redis.call('LRANGE', KEYS[2], 0, n - 1)
if #head < n then return -1 end
for i = 1, n do
  if head[i] ~= ARGV[i + 1] then return -1 end
end
redis.call('LTRIM', KEYS[2], n, -1)
return 1
