-- Take a host's lock if it is free.
--
-- KEYS[1]  P:resource:{H}:lock
-- ARGV[1]  random token of the caller
-- ARGV[2]  TTL in milliseconds
--
-- Returns {acquired (1 or 0), server time "sec.usec", current holder's token or ""}.

local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, now, ARGV[1]}
end
return {0, now, redis.call('GET', KEYS[1]) or ''}
