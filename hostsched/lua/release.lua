-- Drop reservations by id on one host.
--
-- KEYS[1]  P:resource:{H}                actual resources (read for the summary only)
-- KEYS[2]  P:resource:scheduled:{H}      reservations by id
-- KEYS[3]  P:resource:{H}:reserved       running sums of the live reservations
-- KEYS[4]  P:resource:{H}:queue          reservations in the order made
-- KEYS[5]  P:resource:{H}:gen            generation of the host's state
-- KEYS[6]  P:resource:{H}:names          (not used here)
-- KEYS[7]  P:resource:{H}:releasing      releases waiting for a collect's write (lib.lua)
-- KEYS[8]  P:resource:{H}:lock           the collect lock
-- ARGV     the ids to drop
--
-- Returns {released ids, summary}: the ids that were there (none if the keys are not ours),
-- and the host's summary after the call ("" without valid actual resources, or when nothing
-- changed yet). While a collect holds the lock, the ids are released by its write instead:
-- until then they still count, so their room cannot go to another workload before the write
-- counts whatever instance the collect read.

local sums = load_sums(KEYS[2], KEYS[3], KEYS[4])
if not sums then return {{}, ''} end
local generation = current_generation(KEYS[5])
if not generation then return {{}, ''} end
if redis.call('EXISTS', KEYS[8]) == 1 then
  if not usable(KEYS[7], 'hash') then return {{}, ''} end
  local _, stamp = server_time()  -- (as reserve.lua stamps entries: finish_releases compares)
  local waiting = {}
  for _, id in ipairs(ARGV) do
    if redis.call('HEXISTS', KEYS[2], id) == 1 then
      redis.call('HSET', KEYS[7], id, stamp)
      waiting[#waiting + 1] = id
    end
  end
  if #waiting > 0 then
    local ms = redis.call('PTTL', KEYS[2])
    if ms > 0 then redis.call('PEXPIRE', KEYS[7], ms) end
  end
  return {waiting, ''}
end
local dropped, foreign = drop(KEYS[2], KEYS[3], sums, ARGV)
if #dropped > 0 then generation = bump(KEYS[5], generation) end
local host = load_actual(KEYS[1])
if not host or foreign then return {dropped, ''} end
return {dropped, summary(generation, host, sums)}
