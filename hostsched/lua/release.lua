-- Drop reservations by id on one host.
--
-- KEYS[1]  P:resource:{H}                actual resources (read for the summary only)
-- KEYS[2]  P:resource:scheduled:{H}      reservations by id
-- KEYS[3]  P:resource:{H}:reserved       running sums of the live reservations
-- KEYS[4]  P:resource:{H}:queue          reservations in the order made
-- KEYS[5]  P:resource:{H}:gen            generation of the host's state
-- ARGV     the ids to drop
--
-- Returns {dropped ids, summary}: the ids that were there and are now gone (none if the keys
-- are not ours), and the host's summary after the call ("" without valid actual resources).

local sums = load_sums(KEYS[2], KEYS[3], KEYS[4])
if not sums then return {{}, ''} end
local generation = current_generation(KEYS[5])
if not generation then return {{}, ''} end
local dropped, foreign = drop(KEYS[2], KEYS[3], sums, ARGV)
if #dropped > 0 then generation = bump(KEYS[5], generation) end
local host = load_actual(KEYS[1])
if not host or foreign then return {dropped, ''} end
return {dropped, summary(generation, host, sums)}
