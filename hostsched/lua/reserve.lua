-- Reserve capacity on one host, atomically, re-checking that it fits.
--
-- KEYS[1]  P:resource:{H}            actual resources of the host (JSON, version 1)
-- KEYS[2]  P:resource:scheduled:{H}  reservations by id (hash: id -> JSON)
-- ARGV[1]  reservation TTL in seconds (entries older than this no longer count)
-- ARGV[2]  seconds after which the actual resources are stale
-- ARGV[3..] five per reservation: id, cpu millicores, memory bytes, disk bytes, gpus
--
-- Returns {status, detail JSON}. status is one of
--   ok       detail {placed = [ids], existing = [ids], state}
--   full     detail {state}          the batch does not fit (nothing written)
--   stale    detail {age}            actual resources older than ARGV[2]
--   missing  detail {}               no actual resources stored
--   corrupt  detail {reason}         a stored value is not ours (wrong type, does not parse,
--                                    unknown version); nothing written
-- where state = {limit = [c, m, d, g], used = [...], reserved = [...]} after the call.
-- Time comes from the server (TIME), never from the caller.

local DIMS = {'cpu', 'memory', 'disk', 'gpu'}

local function vector(t)
  if type(t) ~= 'table' then return nil end
  local out = {}
  for i, name in ipairs(DIMS) do
    local v = t[name]
    if v == nil then v = 0 end
    if type(v) ~= 'number' or v ~= v or v < 0 then return nil end
    out[i] = v
  end
  return out
end

local function reply(status, detail)
  return {status, cjson.encode(detail)}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[1])
local stale_after = tonumber(ARGV[2])

local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return reply('missing', {}) end
if kind ~= 'string' then return reply('corrupt', {reason = 'actual resources are a ' .. kind}) end
local raw = redis.call('GET', KEYS[1])
local ok, host = pcall(cjson.decode, raw)
if not ok or type(host) ~= 'table' or host.v ~= 1 then
  return reply('corrupt', {reason = 'actual resources do not parse'})
end
local capacity, used = vector(host.capacity), vector(host.used)
local ratios = host.overcommit
if type(ratios) ~= 'table' then ratios = {} end
if not capacity or not used or type(host.collected_at) ~= 'number' then
  return reply('corrupt', {reason = 'actual resources lack a field'})
end
local age = now - host.collected_at
if age > stale_after then return reply('stale', {age = age}) end

local limit = {}
for i, name in ipairs(DIMS) do
  local ratio = ratios[name]
  if i == 4 or type(ratio) ~= 'number' or ratio <= 0 then ratio = 1 end
  limit[i] = math.floor(capacity[i] * ratio)
end

local is_instance = {}
if type(host.names) == 'table' then
  for _, name in ipairs(host.names) do is_instance[name] = true end
end

local scheduled_kind = redis.call('TYPE', KEYS[2])['ok']
if scheduled_kind ~= 'none' and scheduled_kind ~= 'hash' then
  return reply('corrupt', {reason = 'reservations are a ' .. scheduled_kind})
end
local entries = redis.call('HGETALL', KEYS[2])
local reserved = {0, 0, 0, 0}
local live = {}
local expired = {}
for i = 1, #entries, 2 do
  local id = entries[i]
  local good, entry = pcall(cjson.decode, entries[i + 1])
  local amounts = good and vector(entry) or nil
  if not amounts or type(entry.t) ~= 'number' then
    return reply('corrupt', {reason = 'reservation ' .. id .. ' does not parse'})
  end
  if now - entry.t > ttl then
    expired[#expired + 1] = id
  else
    live[id] = true
    for d = 1, 4 do reserved[d] = reserved[d] + amounts[d] end
  end
end
if #expired > 0 then redis.call('HDEL', KEYS[2], unpack(expired)) end

local placed, existing, wanted = {}, {}, {0, 0, 0, 0}
for i = 3, #ARGV, 5 do
  local id = ARGV[i]
  if live[id] or is_instance[id] then
    existing[#existing + 1] = id
  else
    placed[#placed + 1] = i
    for d = 1, 4 do wanted[d] = wanted[d] + tonumber(ARGV[i + d]) end
  end
end

local state = {limit = limit, used = used, reserved = reserved}
for d = 1, 4 do
  if used[d] + reserved[d] + wanted[d] > limit[d] then return reply('full', {state = state}) end
end

-- Formatted by hand: cjson prints 14 significant digits, too few for byte counts.
local stamp = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
local ids = {}
for _, i in ipairs(placed) do
  local id = ARGV[i]
  redis.call('HSET', KEYS[2], id, string.format(
    '{"cpu":%d,"memory":%d,"disk":%d,"gpu":%d,"t":%s}',
    tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]),
    tonumber(ARGV[i + 4]), stamp))
  ids[#ids + 1] = id
end
if #ids > 0 then redis.call('PEXPIRE', KEYS[2], math.ceil(ttl * 1000)) end
for d = 1, 4 do reserved[d] = reserved[d] + wanted[d] end
return reply('ok', {placed = ids, existing = existing, state = state})
