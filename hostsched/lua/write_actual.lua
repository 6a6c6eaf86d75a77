-- Store a host's actual resources from a collect, fenced by its lock and by time.
--
-- KEYS[1]  P:resource:{H}            actual resources (JSON)
-- KEYS[2]  P:resource:scheduled:{H}  reservations by id
-- KEYS[3]  P:resource:{H}:lock       the collect lock, which must still hold ARGV[1]
-- KEYS[4]  P:resource:{H}:gen        generation counter
-- KEYS[5]  P:resource:{H}:reserved   running sums of the live reservations
-- KEYS[6]  P:resource:{H}:queue      reservations in the order made
-- KEYS[7]  P:resource:{H}:names      names of the instances (set), for reserve to look up
-- KEYS[8]  P:resource:{H}:releasing  releases waiting for this write (lib.lua)
-- ARGV[1]  lock token of this collector (hex)
-- ARGV[2]  server time at which this collector started reading the host
-- ARGV[3]  TTL of the actual resources in seconds
-- ARGV[4]  the resources as a JSON object of version 1, without collected_at and writer
-- ARGV[5..] names of the instances now on the host
--
-- Returns {status, generation, summary, dropped ids...}; status is
--   ok         written; reservations whose id is now an instance were dropped in the same step,
--              and so were those released while the lock was held (also the reply to a retry
--              of a write that already happened)
--   lock_lost  the lock expired or was taken by another collector: nothing written
--   newer      a reading started after ours is already stored: nothing written
--   foreign    one of the keys holds data that is not ours (wrong type or version): nothing
--              written, so nothing of another writer is destroyed
-- collected_at is the server's TIME at the write; writer is the lock token. summary (lib.lua)
-- is the host's state after the write ("" unless ok).

if kind(KEYS[3]) ~= 'string' or redis.call('GET', KEYS[3]) ~= ARGV[1] then
  return {'lock_lost', 0, ''}
end
if not string.match(ARGV[1], '^%x+$') or string.sub(ARGV[4], 1, 1) ~= '{' then
  return redis.error_reply('write_actual: bad token or body')
end
if not usable(KEYS[1], 'string') then return {'foreign', 0, ''} end
local generation = current_generation(KEYS[4])
if not generation then return {'foreign', 0, ''} end
if not usable(KEYS[2], 'hash') or not usable(KEYS[5], 'hash') or not usable(KEYS[6], 'list')
    or not usable(KEYS[7], 'set') or not usable(KEYS[8], 'hash') then
  return {'foreign', 0, ''}
end
-- Entries that do not parse are not ours to judge: the host stays corrupt, the write goes on.
local sums = load_sums(KEYS[2], KEYS[5], KEYS[6])

local stored = redis.call('GET', KEYS[1])
if stored then
  local ok, host = pcall(cjson.decode, stored)
  if not ok or type(host) ~= 'table' or host.v ~= 1 then return {'foreign', 0, ''} end
  if host.writer == ARGV[1] then  -- our own write, retried
    local again = load_actual(KEYS[1])
    return {'ok', generation, (again and sums) and summary(generation, again, sums) or ''}
  end
  if type(host.collected_at) == 'number' and host.collected_at > tonumber(ARGV[2]) then
    return {'newer', 0, ''}
  end
end

local _, now = server_time()
local rest = string.sub(ARGV[4], 2)
if rest ~= '}' then rest = ',' .. rest end
redis.call('SET', KEYS[1], '{"collected_at":' .. now .. ',"writer":"' .. ARGV[1] .. '"' .. rest,
           'EX', ARGV[3])
local names = {}
for i = 5, #ARGV do names[#names + 1] = ARGV[i] end
redis.call('DEL', KEYS[7])
call_in_chunks('SADD', KEYS[7], names)
if #names > 0 then redis.call('PEXPIRE', KEYS[7], tonumber(ARGV[3]) * 1000) end
local dropped = {}
if sums then
  local foreign
  dropped, foreign = drop(KEYS[2], KEYS[5], sums, names)
  if not foreign then
    local _, bad = finish_releases(KEYS[8], KEYS[2], KEYS[5], sums)
    foreign = bad
  end
  if foreign then sums = nil end  -- (no summary: the next call finds the host corrupt)
end
generation = bump(KEYS[4], generation)
local host = load_actual(KEYS[1])
local reply = {'ok', generation, (host and sums) and summary(generation, host, sums) or ''}
for _, id in ipairs(dropped) do reply[#reply + 1] = id end
return reply
