-- Store a host's actual resources from a collect, fenced by its lock and by time.
--
-- KEYS[1]  P:resource:{H}            actual resources (JSON)
-- KEYS[2]  P:resource:scheduled:{H}  reservations by id
-- KEYS[3]  P:resource:{H}:lock       the collect lock, which must still hold ARGV[1]
-- KEYS[4]  P:resource:{H}:gen        generation counter
-- ARGV[1]  lock token of this collector
-- ARGV[2]  server time at which this collector started reading the host
-- ARGV[3]  TTL of the actual resources in seconds
-- ARGV[4]  the resources as a JSON object, without collected_at
-- ARGV[5..] names of the instances now on the host
--
-- Returns {status, generation, dropped ids...}; status is
--   ok         written; reservations whose id is now an instance were dropped in the same step
--   lock_lost  the lock expired or was taken by another collector: nothing written
--   newer      a reading started after ours is already stored: nothing written
-- collected_at is the server's TIME at the write.

if redis.call('GET', KEYS[3]) ~= ARGV[1] then return {'lock_lost', 0} end

local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, host = pcall(cjson.decode, stored)
  if ok and type(host) == 'table' and type(host.collected_at) == 'number'
      and host.collected_at > tonumber(ARGV[2]) then
    return {'newer', 0}
  end
end

local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
local body = ARGV[4]
local rest = string.sub(body, 2)
if string.sub(body, 1, 1) ~= '{' then return redis.error_reply('body must be a JSON object') end
if rest ~= '}' then rest = ',' .. rest end
redis.call('SET', KEYS[1], '{"collected_at":' .. now .. rest, 'EX', ARGV[3])
local generation = redis.call('INCR', KEYS[4])

local reply = {'ok', generation}
local kind = redis.call('TYPE', KEYS[2])['ok']
local is_hash = kind == 'hash' or kind == 'none'
for i = 5, #ARGV do
  if is_hash and redis.call('HDEL', KEYS[2], ARGV[i]) == 1 then reply[#reply + 1] = ARGV[i] end
end
return reply
