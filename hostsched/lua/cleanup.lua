-- Prune the expired reservations of one host, finish the releases a collect that is gone left
-- waiting (lib.lua), and describe the host.
--
-- KEYS[1]  P:resource:{H}                actual resources
-- KEYS[2]  P:resource:scheduled:{H}      reservations by id
-- KEYS[3]  P:resource:{H}:reserved       running sums of the live reservations
-- KEYS[4]  P:resource:{H}:queue          reservations in the order made
-- KEYS[5]  P:resource:{H}:gen            generation of the host's state
-- KEYS[6]  P:resource:{H}:names          (not used here)
-- KEYS[7]  P:resource:{H}:releasing      releases waiting for a collect's write
-- KEYS[8]  P:resource:{H}:lock           the collect lock
-- ARGV[1]  reservation TTL in seconds
--
-- Returns {removed, remaining, corrupt, has_actual, summary}: entries pruned or released,
-- entries left, entries that do not parse (reported, never deleted; 1 if the keys are not ours
-- at all), 1 if actual resources exist, and the host's summary ("" without valid actual
-- resources, or while any entry does not parse).

local now = server_time()
local has_actual = redis.call('EXISTS', KEYS[1])
local generation = current_generation(KEYS[5])
if not generation or not usable(KEYS[2], 'hash') or not usable(KEYS[7], 'hash') then
  return {0, 0, 1, has_actual, ''}
end
local sums = load_sums(KEYS[2], KEYS[3], KEYS[4])
if not sums then
  local removed, corrupt = expire_by_scan(KEYS[2], now, tonumber(ARGV[1]))
  if removed > 0 then bump(KEYS[5], generation) end
  return {removed, redis.call('HLEN', KEYS[2]), math.max(corrupt, 1), has_actual, ''}
end
local removed, foreign = expire(KEYS[2], KEYS[3], KEYS[4], sums, now, tonumber(ARGV[1]))
if not foreign and redis.call('EXISTS', KEYS[8]) == 0 then
  local released
  released, foreign = finish_releases(KEYS[7], KEYS[2], KEYS[3], sums)
  removed = removed + released
end
if removed > 0 then generation = bump(KEYS[5], generation) end
local remaining = redis.call('HLEN', KEYS[2])
if foreign then return {removed, remaining, 1, has_actual, ''} end
local host = load_actual(KEYS[1])
if not host then return {removed, remaining, 0, has_actual, ''} end
return {removed, remaining, 0, has_actual, summary(generation, host, sums)}
