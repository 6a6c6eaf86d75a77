-- Take a host's collect lock if it is free, and list the reservations pending on the host.
--
-- KEYS[1]  P:resource:{H}:lock
-- KEYS[2]  P:resource:scheduled:{H}  reservations by id (only their ids are read)
-- ARGV[1]  random token of the caller
-- ARGV[2]  TTL in milliseconds
--
-- Returns {acquired (1 or 0), server time "sec.usec", current holder's token or "",
--          pending reservation ids...}. The ids let a collector count an instance that exists
-- but is not started yet in full while its reservation is dropped.

local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {0, now, redis.call('GET', KEYS[1]) or ''}
end
local reply = {1, now, ARGV[1]}
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind == 'hash' then
  for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do reply[#reply + 1] = id end
end
return reply
