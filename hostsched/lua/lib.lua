-- lib.lua: local functions shared by the per-host scripts, prepended to each when it is loaded
-- (static text, like the scripts; no key is named here, every key comes from KEYS).
--
-- A host's reservations live in three keys that change together:
--   scheduled  hash  id -> {"cpu":..,"memory":..,"disk":..,"gpu":..,"t":server time}
--   reserved   hash  running sums of the live entries (cpu, memory, disk, gpu)
--   expiry     zset  id -> t, so expired entries are found without reading them all
-- and a generation counter (string) bumped by every change of the host's state, which orders
-- the fleet summaries built from it. If the three disagree (an entry written behind our back,
-- a sums key lost), the sums and the expiry index are rebuilt from the entries.

local DIMS = {'cpu', 'memory', 'disk', 'gpu'}

local function kind(key) return redis.call('TYPE', key)['ok'] end

local function server_time()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000,
         string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
end

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

-- A command's reply, or nil and the error if the key holds another type (not ours).
local function call(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then return nil, reply.err end
  return reply
end

-- The host's actual resources: host table with limit (capacity x overcommit) and used_v; or
-- nil, a status ('missing' or 'corrupt') and a reason.
local function load_actual(key)
  local raw, err = call('GET', key)
  if err then return nil, 'corrupt', 'actual resources are not a string' end
  if not raw then return nil, 'missing', 'no actual resources stored' end
  local ok, host = pcall(cjson.decode, raw)
  if not ok or type(host) ~= 'table' or host.v ~= 1 then
    return nil, 'corrupt', 'actual resources do not parse'
  end
  local capacity, used = vector(host.capacity), vector(host.used)
  if not capacity or not used or type(host.collected_at) ~= 'number' then
    return nil, 'corrupt', 'actual resources lack a field'
  end
  local ratios = host.overcommit
  if type(ratios) ~= 'table' then ratios = {} end
  local limit = {}
  for i, name in ipairs(DIMS) do
    local ratio = ratios[name]
    if i == 4 or type(ratio) ~= 'number' or ratio <= 0 then ratio = 1 end
    limit[i] = math.floor(capacity[i] * ratio)
  end
  host.limit, host.used_v = limit, used
  return host
end

local function decode_entry(raw)
  local good, entry = pcall(cjson.decode, raw)
  local amounts = good and vector(entry) or nil
  if not amounts or type(entry.t) ~= 'number' then return nil end
  return amounts, entry.t
end

-- Sums of the live reservations, after checking the keys are ours and rebuilding the sums and
-- expiry index if they disagree with the entries. Returns sums, or nil and a reason.
local function load_sums(scheduled, reserved, expiry)
  local count, bad = call('HLEN', scheduled)
  if bad then return nil, 'reservations are not a hash' end
  local indexed, bad_index = call('ZCARD', expiry)
  local stored, bad_sums = call('HMGET', reserved, 'cpu', 'memory', 'disk', 'gpu')
  if bad_index or bad_sums then return nil, 'reservation sums or expiry index are not ours' end
  local sums = {0, 0, 0, 0}
  if count == 0 then
    if indexed > 0 or stored[1] or stored[2] or stored[3] or stored[4] then
      redis.call('DEL', reserved, expiry)
    end
    return sums
  end
  if count == indexed then
    local good = false
    for d = 1, 4 do
      if stored[d] then good = true end  -- a dimension never reserved has no field
      sums[d] = tonumber(stored[d] or 0)
      if not sums[d] or sums[d] < 0 then good = false; break end
    end
    if good then return sums end
    sums = {0, 0, 0, 0}
  end
  -- Rebuild from the entries: O(entries), only after the keys disagreed.
  local entries = redis.call('HGETALL', scheduled)
  local index = {}
  for i = 1, #entries, 2 do
    local amounts, t = decode_entry(entries[i + 1])
    if not amounts then return nil, 'reservation ' .. entries[i] .. ' does not parse' end
    for d = 1, 4 do sums[d] = sums[d] + amounts[d] end
    index[#index + 1] = string.format('%.6f', t)
    index[#index + 1] = entries[i]
  end
  redis.call('DEL', reserved, expiry)
  redis.call('HSET', reserved, 'cpu', sums[1], 'memory', sums[2], 'disk', sums[3], 'gpu', sums[4])
  for i = 1, #index, 1000 do
    redis.call('ZADD', expiry, unpack(index, i, math.min(i + 999, #index)))
  end
  -- No TTL here: the next reservation sets all three, and once the entries are gone the first
  -- call to see it (a cleanup at the latest) deletes the other two.
  return sums
end

-- Drop the given ids from the three keys; returns the ids that were there. An entry that does
-- not parse is left in place.
local function drop(scheduled, reserved, expiry, sums, ids)
  local dropped = {}
  for _, id in ipairs(ids) do
    local raw = redis.call('HGET', scheduled, id)
    local amounts = raw and decode_entry(raw)
    if amounts then
      redis.call('HDEL', scheduled, id)
      redis.call('ZREM', expiry, id)
      for d = 1, 4 do
        if amounts[d] > 0 then  -- (and never -0, which HINCRBY refuses)
          sums[d] = sums[d] - amounts[d]
          redis.call('HINCRBY', reserved, DIMS[d], 0 - amounts[d])
        end
      end
      dropped[#dropped + 1] = id
    elseif raw then
      -- Not ours to delete: un-indexed, so the next call rebuilds and reports the host corrupt.
      redis.call('ZREM', expiry, id)
    end
  end
  return dropped
end

-- Drop expired entries by reading them all, leaving those that do not parse; for cleanup when
-- the sums cannot be trusted. Returns how many were dropped and how many do not parse.
local function expire_by_scan(scheduled, now, ttl)
  local entries = redis.call('HGETALL', scheduled)
  local expired, corrupt = {}, 0
  for i = 1, #entries, 2 do
    local amounts, t = decode_entry(entries[i + 1])
    if not amounts then
      corrupt = corrupt + 1
    elseif now - t > ttl then
      expired[#expired + 1] = entries[i]
    end
  end
  for first = 1, #expired, 1000 do  -- in chunks: unpack takes a few thousand values at most
    redis.call('HDEL', scheduled, unpack(expired, first, math.min(first + 999, #expired)))
  end
  return #expired, corrupt
end

-- Drop the entries older than ttl seconds (by the expiry index); returns how many.
local function expire(scheduled, reserved, expiry, sums, now, ttl)
  local old = redis.call('ZRANGEBYSCORE', expiry, '-inf', string.format('(%.6f', now - ttl))
  if #old == 0 then return 0 end
  return #drop(scheduled, reserved, expiry, sums, old)
end

-- The generation counter, or nil if the key is not a counter (not ours).
local function current_generation(gen)
  local current, err = call('GET', gen)
  if err then return nil end
  if not current then return 0 end
  if not string.match(current, '^%d+$') then return nil end
  return tonumber(current)
end

-- Count a change of the host's state; ``current`` is what current_generation read (0: no
-- counter yet). A new counter starts at the server's time in microseconds, so one that was
-- lost and made anew is still above every generation it had before, and the newest summary of
-- a host always wins.
local function bump(gen, current)
  if current == 0 then
    local t = redis.call('TIME')
    return redis.call('INCRBY', gen, tonumber(t[1]) * 1000000 + tonumber(t[2]))
  end
  return redis.call('INCR', gen)
end

-- The host's summary for the fleet view: what a scheduler needs to choose it, as a flat array
-- (read without parsing text): generation, collected_at ("sec.usec"), limit, used and
-- reserved (four counts each), instances, labels (JSON). The scheduler publishes it as JSON.
local function summary(generation, host, sums)
  local labels = '{}'
  if type(host.labels) == 'table' and next(host.labels) ~= nil then
    labels = cjson.encode(host.labels)
  end
  local l, u = host.limit, host.used_v
  return {generation, string.format('%.6f', host.collected_at), l[1], l[2], l[3], l[4],
          u[1], u[2], u[3], u[4], sums[1], sums[2], sums[3], sums[4],
          tonumber(host.instances) or 0, labels}
end
