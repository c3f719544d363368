-- Count one redelivery of a recording's job that the broker lost.
-- KEYS: meta, lost, state of the run. ARGV: recording id.
-- Returns the recording's redeliveries so far, counting this one; -1 when the run is
-- closed or gone, or the recording is no longer queued (nothing to redeliver).
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'closed_at') == 1 then
  return -1
end
if redis.call('HGET', KEYS[3], ARGV[1]) ~= 'queued' then return -1 end
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
