-- Store a host's actual resources from a collect, fenced by its lock and by time.
--
-- KEYS[1]  P:resource:{H}            actual resources (JSON)
-- KEYS[2]  P:resource:scheduled:{H}  reservations by id
-- KEYS[3]  P:resource:{H}:lock       the collect lock, which must still hold ARGV[1]
-- KEYS[4]  P:resource:{H}:gen        generation counter
-- ARGV[1]  lock token of this collector (hex)
-- ARGV[2]  server time at which this collector started reading the host
-- ARGV[3]  TTL of the actual resources in seconds
-- ARGV[4]  the resources as a JSON object of version 1, without collected_at and writer
-- ARGV[5..] names of the instances now on the host
--
-- Returns {status, generation, dropped ids...}; status is
--   ok         written; reservations whose id is now an instance were dropped in the same step
--              (also the reply to a retry of a write that already happened)
--   lock_lost  the lock expired or was taken by another collector: nothing written
--   newer      a reading started after ours is already stored: nothing written
--   foreign    one of the keys holds data that is not ours (wrong type or version): nothing
--              written, so nothing of another writer is destroyed
-- collected_at is the server's TIME at the write; writer is the lock token.

local function kind(key) return redis.call('TYPE', key)['ok'] end

if kind(KEYS[3]) ~= 'string' or redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return {'lock_lost', 0}
end
if not string.match(ARGV[1], '^%x+$') or string.sub(ARGV[4], 1, 1) ~= '{' then
  return redis.error_reply('write_actual: bad token or body')
end
local resource_kind, scheduled_kind, generation_kind = kind(KEYS[1]), kind(KEYS[2]), kind(KEYS[4])
if (resource_kind ~= 'none' and resource_kind ~= 'string')
    or (scheduled_kind ~= 'none' and scheduled_kind ~= 'hash')
    or (generation_kind ~= 'none' and generation_kind ~= 'string') then
  return {'foreign', 0}
end
local generation = tonumber(redis.call('GET', KEYS[4]) or '0')
if not generation then return {'foreign', 0} end

local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, host = pcall(cjson.decode, stored)
  if not ok or type(host) ~= 'table' or host.v ~= 1 then return {'foreign', 0} end
  if host.writer == ARGV[1] then return {'ok', generation} end  -- our own write, retried
  if type(host.collected_at) == 'number' and host.collected_at > tonumber(ARGV[2]) then
    return {'newer', 0}
  end
end

local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
local rest = string.sub(ARGV[4], 2)
if rest ~= '}' then rest = ',' .. rest end
redis.call('SET', KEYS[1], '{"collected_at":' .. now .. ',"writer":"' .. ARGV[1] .. '"' .. rest,
           'EX', ARGV[3])
generation = redis.call('INCR', KEYS[4])

local reply = {'ok', generation}
for i = 5, #ARGV do
  if redis.call('HDEL', KEYS[2], ARGV[i]) == 1 then reply[#reply + 1] = ARGV[i] end
end
return reply
