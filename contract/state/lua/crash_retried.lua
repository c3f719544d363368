-- An attempt that ended normally but will run again (a retry): it was no crash, but
-- earlier crashes still count. Never creates the hash (no TTL-less key).
-- KEYS: crash hash.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], 'starts', -1)
end
return 0
