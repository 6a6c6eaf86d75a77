-- Reserve capacity on one host, atomically, re-checking that it fits.
--
-- KEYS[1]  P:resource:{H}                actual resources of the host (JSON, version 1)
-- KEYS[2]  P:resource:scheduled:{H}      reservations by id (hash: id -> JSON)
-- KEYS[3]  P:resource:{H}:reserved       running sums of the live reservations (no TTL: lib.lua)
-- KEYS[4]  P:resource:{H}:queue          reservations in the order made (list, no TTL)
-- KEYS[5]  P:resource:{H}:gen            generation of the host's state
-- KEYS[6]  P:resource:{H}:names          names of the instances on the host (set; see ARGV[3])
-- KEYS[7]  P:resource:{H}:releasing      releases waiting for a collect's write (lib.lua)
-- KEYS[8]  P:resource:{H}:lock           (not used here)
-- KEYS[9..12]  the fleet view's keys (view.lua's), if ARGV[4] names the host: one server only
-- ARGV[1]  reservation TTL in seconds (entries older than this no longer count)
-- ARGV[2]  seconds after which the actual resources are stale
-- ARGV[3]  "new" if the scheduler drew the ids itself just now: no instance can bear them yet,
--          so they are not looked up among the instance names; else "given"
-- ARGV[4]  the host's name, to publish its summary to the fleet view under (lib.lua's
--          publish), or "" not to
-- ARGV[5..] five per reservation: id, cpu millicores, memory bytes, disk bytes, gpus
--
-- Returns {status, summary, reason, sequence, n, n placed ids..., existing ids...}; status is
-- one of
--   ok       the batch is reserved (ids already held, or already instances, are "existing")
--   full     the batch does not fit, or an id's old reservation here is still being released
--            (reason: which): nothing written
--   stale    actual resources older than ARGV[2]: nothing written
--   missing  no actual resources stored
--   corrupt  a stored value is not ours (wrong type, does not parse, unknown version)
-- summary (see lib.lua) is the host's state after the call, "" when missing or corrupt;
-- sequence is the fleet view's sequence number for it if published, 0 if not asked to or
-- nothing to publish, -1 if publishing failed.
-- Cost: O(batch + expired entries), whatever the number of live reservations or of instances.

local now, stamp = server_time()
local ttl, stale_after = tonumber(ARGV[1]), tonumber(ARGV[2])

-- The reply, once the summary is published where asked.
local function answer(status, state, reason, placed, existing)
  local sequence = 0
  if state ~= '' and ARGV[4] ~= '' then
    sequence = publish({KEYS[9], KEYS[10], KEYS[11], KEYS[12]}, ARGV[4], state)
  end
  local reply = {status, state, reason, sequence, #placed}
  for _, id in ipairs(placed) do reply[#reply + 1] = id end
  for _, id in ipairs(existing) do reply[#reply + 1] = id end
  return reply
end

local host, status, reason = load_actual(KEYS[1])
if not host then return answer(status, '', reason, {}, {}) end
local sums, bad = load_sums(KEYS[2], KEYS[3], KEYS[4])
if not sums then return answer('corrupt', '', bad, {}, {}) end
local generation = current_generation(KEYS[5])
if not generation then return answer('corrupt', '', 'generation is not a counter', {}, {}) end

local expired, foreign = expire(KEYS[2], KEYS[3], KEYS[4], sums, now, ttl)
if expired > 0 then generation = bump(KEYS[5], generation) end
if foreign then return answer('corrupt', '', 'a reservation does not parse', {}, {}) end
if now - host.collected_at > stale_after then
  return answer('stale', summary(generation, host, sums), 'actual resources are stale', {}, {})
end

local is_instance = function() return false end  -- (ids drawn just now: see ARGV[3])
if ARGV[3] ~= 'new' then
  is_instance = instance_test(host, KEYS[1], KEYS[6])
  if not is_instance then return answer('corrupt', '', 'instance names are not a set', {}, {}) end
end
local fresh, existing, wanted = {}, {}, {0, 0, 0, 0}
for i = 5, #ARGV, 5 do
  local id = ARGV[i]
  local held = redis.call('HEXISTS', KEYS[2], id) == 1
  if held then
    local releasing = call('HEXISTS', KEYS[7], id)
    if releasing == nil then return answer('corrupt', '', 'releases are not ours', {}, {}) end
    if releasing == 1 then
      local why = id .. ' is being released here'
      return answer('full', summary(generation, host, sums), why, {}, {})
    end
  end
  if held or is_instance(id) then
    existing[#existing + 1] = id
  else
    fresh[#fresh + 1] = i
    for d = 1, 4 do wanted[d] = wanted[d] + tonumber(ARGV[i + d]) end
  end
end

local limit, used = host.limit, host.used_v
for d = 1, 4 do
  if used[d] + sums[d] + wanted[d] > limit[d] then
    return answer('full', summary(generation, host, sums), '', {}, {})
  end
end

local placed, queued = {}, {}
for _, i in ipairs(fresh) do
  local id = ARGV[i]
  redis.call('HSET', KEYS[2], id, string.format(
    '{"cpu":%d,"memory":%d,"disk":%d,"gpu":%d,"t":%s}',
    tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]),
    tonumber(ARGV[i + 4]), stamp))
  placed[#placed + 1] = id
  queued[#queued + 1] = stamp .. ' ' .. id
end
if #placed > 0 then
  call_in_chunks('RPUSH', KEYS[4], queued)
  for d = 1, 4 do sums[d] = sums[d] + wanted[d] end
  sums[5] = sums[5] + #placed
  write_sums(KEYS[3], sums)
  redis.call('PEXPIRE', KEYS[2], math.ceil(ttl * 1000))
  generation = bump(KEYS[5], generation)
end
return answer('ok', summary(generation, host, sums), '', placed, existing)
