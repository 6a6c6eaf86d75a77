-- The fleet view: read what changed, and publish host summaries (newest generation wins).
-- On one server reserve.lua also publishes, in the script that makes the change (lib.lua).
--
-- KEYS[1]  P:{fleet}:summary   hash: host -> summary JSON (starts with {"gen":N)
-- KEYS[2]  P:{fleet}:changes   zset: host -> sequence number of its last published change
-- KEYS[3]  P:{fleet}:load      zset: host -> utilisation (0 idle .. 1 full), to find the ends
-- KEYS[4]  P:{fleet}:sequence  the last sequence number given (a counter; where it was lost,
--                              numbers go on from the last one in KEYS[2])
-- ARGV[1]  what to read: "-" nothing, "all", "since:N" (published after sequence number N),
--          or "ends:K" (the K least and the K most loaded hosts)
-- ARGV[2..] triples to publish: host, utilisation, summary
--
-- Returns {server time "sec.usec", sequence number after publishing, hosts in the view, host,
-- summary, ...}. The read comes first, so it never returns what this call wrote (the caller
-- has it), nor costs for it. The sequence number is -1 if a key is not ours: then nothing is
-- written or read, as the view is only a hint; nobody depends on it for correctness.
-- Summaries of one host can arrive out of order from several schedulers; the generation,
-- bumped atomically with every change of the host, keeps an older one from winning
-- (generations start from the server's clock, so they only ever grow).
-- Cost: a few commands per call, not per summary (a summary costs a zset update).

local t = redis.call('TIME')
local reply = {string.format('%d.%06d', tonumber(t[1]), tonumber(t[2])), -1, 0}
local kinds = {hash = true, none = true}
if not kinds[redis.call('TYPE', KEYS[1])['ok']] then return reply end
kinds = {zset = true, none = true}
if not kinds[redis.call('TYPE', KEYS[2])['ok']] or not kinds[redis.call('TYPE', KEYS[3])['ok']] then
  return reply
end
local counted = redis.pcall('GET', KEYS[4])
if type(counted) == 'table' or (counted and not string.match(counted, '^%d+$')) then
  return reply
end
local seq = tonumber(counted)
if not seq then
  local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  seq = tonumber(top[2] or 0)
end

-- The summaries of ``hosts`` (a list), in chunks: unpack takes a few thousand values at most.
local function hmget(hosts)
  local values = {}
  for first = 1, #hosts, 1000 do
    local chunk = redis.call('HMGET', KEYS[1], unpack(hosts, first, math.min(first + 999, #hosts)))
    for _, value in ipairs(chunk) do values[#values + 1] = value end
  end
  return values
end

local function generation(body)
  return body and tonumber(string.match(body, '^{"gen":(%d+)'))
end

local mode, n = string.match(ARGV[1], '^(%a+):?(%d*)$')
n = tonumber(n)
local hosts
if mode == 'all' or (mode == 'since' and n and n > seq) then  -- (a view from before a reset)
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all do reply[#reply + 1] = all[i] end
elseif mode == 'since' and n then
  hosts = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. n, '+inf')
elseif mode == 'ends' and n and n > 0 then
  hosts = redis.call('ZRANGE', KEYS[3], 0, n - 1)
  local seen = {}
  for _, host in ipairs(hosts) do seen[host] = true end
  for _, host in ipairs(redis.call('ZREVRANGE', KEYS[3], 0, n - 1)) do
    if not seen[host] then hosts[#hosts + 1] = host end
  end
end
if hosts and #hosts > 0 then
  local bodies = hmget(hosts)
  for i, host in ipairs(hosts) do
    if bodies[i] then
      reply[#reply + 1] = host
      reply[#reply + 1] = bodies[i]
    end
  end
end

-- Publish: each host's newest summary given, if newer than the stored one.
local newest, gens, order = {}, {}, {}  -- host -> index in ARGV, its generation; hosts given
for i = 2, #ARGV - 2, 3 do
  local host, gen = ARGV[i], generation(ARGV[i + 2])
  if gen and tonumber(ARGV[i + 1]) and (gens[host] or -1) < gen then
    if not gens[host] then order[#order + 1] = host end
    newest[host], gens[host] = i, gen
  end
end
if #order > 0 then
  local stored = hmget(order)
  local summaries, changes, loads = {}, {}, {}
  for k, host in ipairs(order) do
    local i = newest[host]
    local known = generation(stored[k])
    if not known or gens[host] > known then
      seq = seq + 1
      summaries[#summaries + 1] = host
      summaries[#summaries + 1] = ARGV[i + 2]
      changes[#changes + 1] = seq
      changes[#changes + 1] = host
      loads[#loads + 1] = ARGV[i + 1]
      loads[#loads + 1] = host
    end
  end
  for first = 1, #summaries, 1000 do  -- (pairs: chunks of 500 hosts)
    local last = math.min(first + 999, #summaries)
    redis.call('HSET', KEYS[1], unpack(summaries, first, last))
    redis.call('ZADD', KEYS[2], unpack(changes, first, last))
    redis.call('ZADD', KEYS[3], unpack(loads, first, last))
  end
  if #summaries > 0 then redis.call('SET', KEYS[4], seq) end
end
reply[2] = seq
reply[3] = redis.call('HLEN', KEYS[1])
return reply
