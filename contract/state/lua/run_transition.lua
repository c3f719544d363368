-- Move one recording of a run to a new state, keeping the counters consistent.
-- KEYS: state, counts, meta, failures, jobs, lost of the run; the recording's pending
-- fact (pv:pending:<recording id>, across runs).
-- ARGV: recording id, new state, delivered ("1": the outcome of a delivered job, "0": a
-- producer's), failure entry JSON ("" unless the new state is "failed"), job JSON (the
-- published job when the new state is "queued", else ""), run id, the pending fact's
-- time to live in s.
-- Writes or removes the failure entry in the same step, so `failures` holds exactly the
-- failed recordings (plus re-queued ones being retried). Rules:
-- - a repeated transition is a no-op (a failure's entry is refreshed);
-- - "done" is never downgraded to "skipped": that is a redelivered job (its worker died
--   after storing the record, before the ack) finding the record this run computed;
-- - a delivered job of a run that no longer exists (expired) changes nothing (-1), so a
--   very late delivery cannot resurrect run keys that would then never expire;
-- - in a compacted run (meta `compacted_at`) a recording missing from the state hash was
--   failed if `failures` lists it, and otherwise either succeeded before the compaction
--   or is new: a delivered job's outcome for it is a redelivery of a counted success, a
--   no-op (0); a producer's is a new recording, counted;
-- - a transition to "queued" reopens a closed run: its keys stop expiring until it is
--   closed again;
-- - `jobs` keeps the job of every queued recording (written with "queued", dropped with
--   any other state), so a job the broker lost can be published again; `lost` counts
--   such redeliveries and is dropped with it;
-- - the pending fact says "a job of this recording is queued, in this run" to producers
--   of every run (they skip resolving it): set with "queued", deleted with any other
--   state when it still names this run (another run may have queued it since). It
--   expires after its TTL, so a run abandoned with jobs queued does not hide its
--   recordings from later producers for ever. Set or deleted even when the state does not
--   change (a republished job refreshes it).
-- Returns 1 moved, 0 no change, -1 run gone.
local rid, new, delivered, failure, job = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4], ARGV[5]
local run_id, pending_ttl = ARGV[6], tonumber(ARGV[7])
if new == 'queued' then
  redis.call('SET', KEYS[7], run_id, 'EX', pending_ttl)
elseif redis.call('GET', KEYS[7]) == run_id then
  redis.call('DEL', KEYS[7])
end
if delivered and redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if new == 'queued' then
  if job and job ~= '' then
    redis.call('HSET', KEYS[5], rid, job)
    -- in a run closed as abandoned (expiring, still queued) a new hash expires with it
    local ttl = redis.call('TTL', KEYS[3])
    if ttl > 0 and redis.call('TTL', KEYS[5]) == -1 then redis.call('EXPIRE', KEYS[5], ttl) end
  end
else
  redis.call('HDEL', KEYS[5], rid)
  redis.call('HDEL', KEYS[6], rid)
end
local old = redis.call('HGET', KEYS[1], rid)
if not old and redis.call('HEXISTS', KEYS[3], 'compacted_at') == 1 then
  if redis.call('HEXISTS', KEYS[4], rid) == 1 then
    old = 'failed'
  elseif delivered then
    return 0
  end
end
if old == new then
  if new == 'failed' and failure ~= '' then redis.call('HSET', KEYS[4], rid, failure) end
  return 0
end
if old == 'done' and new == 'skipped' then return 0 end
-- a failure never overrides a completed recording: it comes from a second execution
-- of a job another one completed (its first holder stalled past the visibility timeout)
if new == 'failed' and (old == 'done' or old == 'skipped') then return 0 end
redis.call('HSET', KEYS[1], rid, new)
redis.call('HINCRBY', KEYS[2], new, 1)
if old then redis.call('HINCRBY', KEYS[2], old, -1) end
if new == 'failed' then
  if failure ~= '' then redis.call('HSET', KEYS[4], rid, failure) end
elseif new ~= 'queued' then
  redis.call('HDEL', KEYS[4], rid)
end
redis.call('HSET', KEYS[3], 'changed_at', redis.call('TIME')[1])
if redis.call('HEXISTS', KEYS[3], 'closed_at') == 1 then
  if new == 'queued' then
    for i = 1, #KEYS do redis.call('PERSIST', KEYS[i]) end
    redis.call('HDEL', KEYS[3], 'closed_at', 'expires_at')
  else
    -- a key this created (the state hash of a compacted run) expires with the others
    local ttl = redis.call('TTL', KEYS[3])
    if ttl > 0 then
      for i = 1, #KEYS do
        if redis.call('TTL', KEYS[i]) == -1 then redis.call('EXPIRE', KEYS[i], ttl) end
      end
    end
  end
end
return 1
