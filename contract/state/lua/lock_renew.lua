-- Extend a lock (the reducer's, a cursor's) while it is ours. KEYS: lock. ARGV: token, TTL in ms.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
