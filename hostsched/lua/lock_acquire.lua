-- Take a host's collect lock if it is free, and list the reservations pending on the host.
--
-- KEYS[1]  P:resource:{H}:lock
-- KEYS[2]  P:resource:scheduled:{H}  reservations by id (only their ids are read)
-- ARGV[1]  random token of the caller
-- ARGV[2]  TTL in milliseconds
--
-- Returns {acquired (1 or 0), server time "sec.usec", holder's token ("" for foreign data),
--          pending reservation ids...}. A retry of a call that did take the lock (the reply
-- was lost) finds its own token and counts as acquired. The ids let a collector count an
-- instance that exists but is not started yet in full while its reservation is dropped.

local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'string' then return {0, now, ''} end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {0, now, holder} end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
local reply = {1, now, ARGV[1]}
if redis.call('TYPE', KEYS[2])['ok'] == 'hash' then
  for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do reply[#reply + 1] = id end
end
return reply
