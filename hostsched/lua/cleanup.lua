-- Prune the expired reservations of one host.
--
-- KEYS[1]  P:resource:scheduled:{H}  reservations by id
-- KEYS[2]  P:resource:{H}            actual resources (only checked for existence)
-- ARGV[1]  reservation TTL in seconds
--
-- Returns {removed, remaining, corrupt, has_actual}: entries pruned, entries left, entries left
-- because they do not parse (reported, never deleted blindly), and 1 if actual resources exist.

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local has_actual = redis.call('EXISTS', KEYS[2])

local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'hash' then return {0, 0, 1, has_actual} end
local entries = redis.call('HGETALL', KEYS[1])
local expired, remaining, corrupt = {}, 0, 0
for i = 1, #entries, 2 do
  local good, entry = pcall(cjson.decode, entries[i + 1])
  if not good or type(entry) ~= 'table' or type(entry.t) ~= 'number' then
    corrupt = corrupt + 1
    remaining = remaining + 1
  elseif now - entry.t > ttl then
    expired[#expired + 1] = entries[i]
  else
    remaining = remaining + 1
  end
end
if #expired > 0 then redis.call('HDEL', KEYS[1], unpack(expired)) end
return {#expired, remaining, corrupt, has_actual}
