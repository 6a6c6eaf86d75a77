-- lib.lua: local functions shared by the per-host scripts, prepended to each when it is loaded
-- (static text, like the scripts; no key is named here, every key comes from KEYS).
--
-- A host's reservations live in three keys that change together:
--   scheduled  hash  id -> {"cpu":..,"memory":..,"disk":..,"gpu":..,"t":server time}
--   reserved   hash  running sums of the live entries (cpu, memory, disk, gpu) and their number
--                    (n)
--   queue      list  "t id" for each entry made, oldest first, so expired entries are found
--                    without reading them all: O(1) to add to, where a sorted set costs
--                    O(entries) while it is small enough for Redis to keep it packed. An element
--                    whose entry is gone (released, seen as an instance) or newer (the id was
--                    reserved again) is passed over when it reaches the head.
-- If they disagree (an entry written or deleted behind our back, a key lost), the sums and the
-- queue are rebuilt from the entries. Only scheduled has a TTL (the reservations', refreshed by
-- each reservation): the first call to find no entry deletes the other two (a cleanup at the
-- latest), so a reservation pays for one key's TTL, not three.
-- A generation counter (string), bumped by every change of the host's state, orders the fleet
-- summaries built from it. Beside the actual resources (whose instance names come last),
-- write_actual keeps those names in a set, so that a reservation looks its ids up without
-- reading them all.

local DIMS = {'cpu', 'memory', 'disk', 'gpu'}

local function kind(key) return redis.call('TYPE', key)['ok'] end

-- Whether ``key`` can be used as a ``wanted`` (a type as kind names it): it is one, or none yet.
local function usable(key, wanted)
  local found = kind(key)
  return found == 'none' or found == wanted
end

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
    if type(v) ~= 'number' or v ~= v or v < 0 or v == math.huge then return nil end
    out[i] = v
  end
  return out
end

-- One command with ``values`` after ``key``, sent in chunks: unpack takes a few thousand values
-- at most.
local function call_in_chunks(command, key, values)
  for first = 1, #values, 1000 do
    redis.call(command, key, unpack(values, first, math.min(first + 999, #values)))
  end
end

-- A command's reply, or nil and the error if the key holds another type (not ours). Any other
-- error (a permission, memory) fails the script, as it says nothing of the data.
local function call(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    if string.sub(reply.err, 1, 9) ~= 'WRONGTYPE' then error(reply) end
    return nil, reply.err
  end
  return reply
end

-- Labels as a summary carries them (JSON), or nil if they are not an object of strings (a
-- summary that the schedulers could not read would hide a reservation made).
local function labels_json(labels)
  if labels == nil then return '{}' end
  if type(labels) ~= 'table' then return nil end
  for name, value in pairs(labels) do
    if type(name) ~= 'string' or type(value) ~= 'string' then return nil end
  end
  return next(labels) == nil and '{}' or cjson.encode(labels)
end

local function decode_actual(text)
  local ok, host = pcall(cjson.decode, text)
  if not ok or type(host) ~= 'table' or host.v ~= 1 then return nil end
  local capacity, used = vector(host.capacity), vector(host.used)
  if not capacity or not used or type(host.collected_at) ~= 'number' then return nil end
  return host, capacity, used
end

-- How much of the actual resources a script reads first. The instance names come last, as
-- collect writes them (codec.encode_actual), and can be thousands: reading and decoding them
-- on every reservation cost O(instances). Everything before them is a few hundred bytes.
local HEAD_BYTES = 4096
local NAMES = ',"names":['  -- (a quote inside a JSON string is escaped: this is the member)

-- The host's actual resources: host table with limit (capacity x overcommit) and used_v, and
-- names_at (where the names' "[" is) if only the part before them was decoded; or nil, a status
-- ('missing' or 'corrupt') and a reason.
local function load_actual(key)
  local start, err = call('GETRANGE', key, 0, HEAD_BYTES - 1)
  if err then return nil, 'corrupt', 'actual resources are not a string' end
  if start == '' and redis.call('EXISTS', key) == 0 then
    return nil, 'missing', 'no actual resources stored'
  end
  local whole = #start < HEAD_BYTES
  local host, capacity, used, names_at
  local at = string.find(start, NAMES, 1, true)
  if at and string.sub(start, at + #NAMES, at + #NAMES) ~= ']' then  -- (none: decode it all)
    local tail = whole and string.sub(start, -2) or redis.call('GETRANGE', key, -2, -1)
    if tail == ']}' then  -- the names are the last member: decode what comes before
      host, capacity, used = decode_actual(string.sub(start, 1, at - 1) .. '}')
      names_at = at + #NAMES - 1
    end
  end
  if not host then  -- no names, laid out otherwise, or a long head: read it whole
    names_at = nil
    host, capacity, used = decode_actual(whole and start or redis.call('GET', key))
  end
  local labels = host and labels_json(host.labels)
  local instances = host and (host.instances or 0)
  if not labels or type(instances) ~= 'number' or instances < 0 or instances % 1 ~= 0 then
    return nil, 'corrupt', 'actual resources do not parse or lack a field'
  end
  local ratios = host.overcommit
  if type(ratios) ~= 'table' then ratios = {} end
  local limit = {}
  for i, name in ipairs(DIMS) do
    local ratio = ratios[name]
    if i == 4 or type(ratio) ~= 'number' or ratio <= 0 then ratio = 1 end
    limit[i] = math.floor(capacity[i] * ratio)
  end
  host.limit, host.used_v, host.names_at = limit, used, names_at
  host.labels_json, host.instances = labels, instances
  return host
end

-- A test of whether an id is an instance on the host (then its reservation is "existing"):
-- by the set of names collect keeps beside the record (``key``), in O(1); by the record's own
-- list if that was decoded, or if there is no set (a record written before the set was kept).
-- Nil if the set is not ours.
local function instance_test(host, key, names_key)
  local listed = host.names
  if host.names_at then
    local names_kind = kind(names_key)
    if names_kind == 'set' then
      return function(id) return redis.call('SISMEMBER', names_key, id) == 1 end
    elseif names_kind ~= 'none' then
      return nil
    end
    local ok, decoded = pcall(cjson.decode, string.sub(redis.call('GET', key), host.names_at, -2))
    listed = ok and decoded or {}
  end
  local is_instance = {}
  if type(listed) == 'table' then
    for _, name in ipairs(listed) do is_instance[name] = true end
  end
  return function(id) return is_instance[id] == true end
end

local function decode_entry(raw)
  local good, entry = pcall(cjson.decode, raw)
  local amounts = good and vector(entry) or nil
  if not amounts or type(entry.t) ~= 'number' then return nil end
  return amounts, entry.t
end

local function write_sums(reserved, sums)
  redis.call('HSET', reserved, 'cpu', sums[1], 'memory', sums[2], 'disk', sums[3],
             'gpu', sums[4], 'n', sums[5])
end

-- Rebuild the sums (in place) and the queue from the entries: O(entries), only after the keys
-- disagreed. Returns the sums, or nil and a reason if an entry does not parse.
local function rebuild(scheduled, reserved, queue, sums)
  for d = 1, 5 do sums[d] = 0 end
  local entries = redis.call('HGETALL', scheduled)
  local made = {}
  for i = 1, #entries, 2 do
    local amounts, t = decode_entry(entries[i + 1])
    if not amounts then return nil, 'reservation ' .. entries[i] .. ' does not parse' end
    for d = 1, 4 do sums[d] = sums[d] + amounts[d] end
    made[#made + 1] = {t, entries[i]}
  end
  sums[5] = #made
  table.sort(made, function(a, b) return a[1] < b[1] end)
  local elements = {}
  for i, entry in ipairs(made) do elements[i] = string.format('%.6f %s', entry[1], entry[2]) end
  redis.call('DEL', reserved, queue)
  write_sums(reserved, sums)
  call_in_chunks('RPUSH', queue, elements)
  return sums
end

-- Sums of the live reservations ({cpu, memory, disk, gpu, n}), after checking the keys are ours
-- and rebuilding the sums and the queue if they disagree with the entries. Returns the sums, or
-- nil and a reason.
local function load_sums(scheduled, reserved, queue)
  local count, bad = call('HLEN', scheduled)
  if bad then return nil, 'reservations are not a hash' end
  local queued, bad_queue = call('LLEN', queue)
  local stored, bad_sums = call('HMGET', reserved, 'cpu', 'memory', 'disk', 'gpu', 'n')
  if bad_queue or bad_sums then return nil, 'reservation sums or queue are not ours' end
  local sums = {0, 0, 0, 0, 0}
  if count == 0 then
    if queued > 0 or stored[1] or stored[2] or stored[3] or stored[4] or stored[5] then
      redis.call('DEL', reserved, queue)
    end
    return sums
  end
  if tonumber(stored[5]) == count and queued >= count then
    local good = true
    for d = 1, 4 do
      sums[d] = tonumber(stored[d])
      if not sums[d] or sums[d] < 0 then good = false; break end
    end
    sums[5] = count
    if good then return sums end
  end
  return rebuild(scheduled, reserved, queue, sums)
end

-- Drop the given ids (those with an entry made before ``before``, if given) from the entries
-- and the sums; their queue elements are passed over later. Returns the ids dropped, and true
-- if an entry does not parse: it is left in place, and the sums marked for a rebuild (which
-- reports the host corrupt), so the caller must write no sums after this.
local function drop(scheduled, reserved, sums, ids, before)
  local dropped, foreign = {}, false
  for _, id in ipairs(ids) do
    local raw = redis.call('HGET', scheduled, id)
    local amounts, t
    if raw then amounts, t = decode_entry(raw) end
    if amounts and (not before or t < before) then
      redis.call('HDEL', scheduled, id)
      for d = 1, 4 do sums[d] = sums[d] - amounts[d] end
      sums[5] = sums[5] - 1
      dropped[#dropped + 1] = id
    elseif raw and not amounts then
      foreign = true
    end
  end
  if foreign then
    redis.call('HDEL', reserved, 'n')
  elseif #dropped > 0 then
    write_sums(reserved, sums)
  end
  return dropped, foreign
end

-- A reservation released while a collect holds the host's lock waits for that collect's write
-- (or, once the lock is gone, for a cleanup) in ``releasing``, a hash of id -> release time:
-- the collect may have read its instance before it was deleted, and that room must not be
-- handed out before the write counts the instance. Drops every waiting entry made before its
-- release (one made after is a new reservation) and forgets the hash. Returns how many were
-- dropped, and true if an entry does not parse (as drop; the hash is kept for a later call).
local function finish_releases(releasing, scheduled, reserved, sums)
  local waiting, count = redis.call('HGETALL', releasing), 0
  for i = 1, #waiting, 2 do
    local dropped, foreign = drop(scheduled, reserved, sums, {waiting[i]},
                                  tonumber(waiting[i + 1]))
    if foreign then return count, true end
    count = count + #dropped
  end
  if #waiting > 0 then redis.call('DEL', releasing) end
  return count, false
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
  call_in_chunks('HDEL', scheduled, expired)
  return #expired, corrupt
end

-- The time and id of a queue element "t id", or nil if it is not one.
local function queued(element)
  local t, id = string.match(element, '^(%S+) (.*)$')
  t = tonumber(t)
  if t and t == t and t < math.huge then return t, id end
end

-- Drop the entries older than ttl seconds, found at the head of the queue. Returns how many,
-- and true if an entry does not parse (as drop).
local function expire(scheduled, reserved, queue, sums, now, ttl)
  local before = now - ttl
  local head = redis.call('LINDEX', queue, 0)
  if not head or (queued(head) or 0) >= before then return 0, false end
  local old, passed, lost, young = {}, 0, false, false
  repeat
    local chunk = redis.call('LRANGE', queue, passed, passed + 99)
    for _, element in ipairs(chunk) do
      local t, id = queued(element)
      young = t ~= nil and t >= before
      if young then break end
      passed = passed + 1
      if t then old[#old + 1] = id end
      lost = lost or not t  -- not ours: whichever entry it stood for is in the queue no more
    end
  until young or #chunk < 100
  redis.call('LTRIM', queue, passed, -1)
  local dropped, foreign = drop(scheduled, reserved, sums, old, before)
  if lost and not foreign and not rebuild(scheduled, reserved, queue, sums) then
    redis.call('HDEL', reserved, 'n')
    foreign = true
  end
  return #dropped, foreign
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
  local l, u = host.limit, host.used_v
  return {generation, string.format('%.6f', host.collected_at), l[1], l[2], l[3], l[4],
          u[1], u[2], u[3], u[4], sums[1], sums[2], sums[3], sums[4],
          host.instances, host.labels_json}
end

-- The load index's weights: strategies.DEFAULT_WEIGHTS (CPU, memory, disk).
local LOAD_WEIGHTS = {0.4, 0.4, 0.2}

-- A host's summary as the fleet view holds it (codec.encode_summary's JSON, generation first).
local function summary_json(state)
  return string.format(
    '{"gen":%d,"at":%s,"limit":[%d,%d,%d,%d],"used":[%d,%d,%d,%d],' ..
    '"reserved":[%d,%d,%d,%d],"instances":%d,"labels":%s}', unpack(state))
end

-- Utilisation of the host by LOAD_WEIGHTS (strategies.weighted_use): the load index's score.
local function summary_load(state)
  local score, total = 0, 0
  for d = 1, 3 do
    local limit, held = state[2 + d], state[6 + d] + state[10 + d]
    if limit > 0 then score = score + LOAD_WEIGHTS[d] * held / limit end
    total = total + LOAD_WEIGHTS[d]
  end
  return score / total
end

-- Publish a summary (the host's state just written) to the fleet view, as view.lua does but
-- without its generation check: no summary of the host can be newer than this one. Only on
-- one server, where the script may touch the view's keys (in a cluster they live on another
-- node, and the scheduler passes the summary on through view.lua). Called last: the view is
-- a hint, so any error (its keys not ours) leaves the host's writes standing and returns -1.
-- ``view``: the summary hash, the changes and the load sorted sets, the sequence counter
-- (view.lua's KEYS). Returns the sequence number of the change, or -1.
local function publish(view, name, state)
  -- (an error reply is a table; INCR, HSET and ZADD reply with numbers)
  local seq = redis.pcall('INCR', view[4])
  if type(seq) == 'table' then return -1 end
  if seq == 1 then  -- a new counter: its numbers go on from the change log's last, if any
    local top = redis.pcall('ZREVRANGE', view[2], 0, 0, 'WITHSCORES')
    if top.err then return -1 end
    seq = tonumber(top[2] or 0) + 1
    if seq > 1 and redis.pcall('SET', view[4], seq).err then return -1 end
  end
  if type(redis.pcall('HSET', view[1], name, summary_json(state))) == 'table'
      or type(redis.pcall('ZADD', view[2], seq, name)) == 'table'
      or type(redis.pcall('ZADD', view[3], summary_load(state), name)) == 'table' then
    return -1
  end
  return seq
end
