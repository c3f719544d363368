-- Remove expired runs from pv:runs, re-checked in one step so that a run created again
-- meanwhile stays listed.
-- KEYS: pv:runs, then the meta key of each run in ARGV. ARGV: run ids whose meta was
-- found gone. Removes from pv:runs those whose meta is still gone; returns how many.
local n = 0
for i, run_id in ipairs(ARGV) do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then n = n + redis.call('ZREM', KEYS[1], run_id) end
end
return n
