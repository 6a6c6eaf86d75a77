-- The fleet view: publish host summaries (newest generation wins) and read what changed.
--
-- KEYS[1]  P:{fleet}:summary   hash: host -> summary JSON (starts with {"gen":N)
-- KEYS[2]  P:{fleet}:changes   zset: host -> sequence number of its last published change
-- KEYS[3]  P:{fleet}:load      zset: host -> utilisation (0 idle .. 1 full), to find the ends
-- ARGV[1]  what to read: "-" nothing, "all", "since:N" (published after sequence number N),
--          or "ends:K" (the K least and the K most loaded hosts)
-- ARGV[2..] triples to publish: host, utilisation, summary
--
-- Returns {server time "sec.usec", sequence number now, hosts in the view, host, summary, ...},
-- without the summaries this call wrote (the caller has them). The sequence number is -1 if a
-- key is not ours: then nothing is written or read, as the view is only a hint; nobody depends
-- on it for correctness. Summaries of one host can arrive out of order from several
-- schedulers; the generation, bumped atomically with every change of the host, keeps an older
-- one from winning (generations start from the server's clock, so they only ever grow).

local t = redis.call('TIME')
local reply = {string.format('%d.%06d', tonumber(t[1]), tonumber(t[2])), -1, 0}
local kinds = {hash = true, none = true}
if not kinds[redis.call('TYPE', KEYS[1])['ok']] then return reply end
kinds = {zset = true, none = true}
if not kinds[redis.call('TYPE', KEYS[2])['ok']] or not kinds[redis.call('TYPE', KEYS[3])['ok']] then
  return reply
end
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local seq = tonumber(top[2] or 0)

local mine = {}
for i = 2, #ARGV, 3 do
  local host, load, body = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local gen = tonumber(string.match(body, '^{"gen":(%d+)'))
  if gen and tonumber(load) then
    local current = redis.call('HGET', KEYS[1], host)
    local known = current and tonumber(string.match(current, '^{"gen":(%d+)'))
    if not known or gen > known then
      seq = seq + 1
      redis.call('HSET', KEYS[1], host, body)
      redis.call('ZADD', KEYS[2], seq, host)
      redis.call('ZADD', KEYS[3], load, host)
      mine[host] = true
    end
  end
end
reply[2] = seq
reply[3] = redis.call('HLEN', KEYS[1])

local mode, n = string.match(ARGV[1], '^(%a+):?(%d*)$')
n = tonumber(n)
local hosts, bodies
if mode == 'all' or (mode == 'since' and n and n > seq) then  -- (a view from before a reset)
  local all = redis.call('HGETALL', KEYS[1])
  hosts, bodies = {}, {}
  for i = 1, #all, 2 do hosts[#hosts + 1] = all[i]; bodies[#bodies + 1] = all[i + 1] end
elseif mode == 'since' and n then
  hosts = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. n, '+inf')
elseif mode == 'ends' and n and n > 0 then
  hosts = redis.call('ZRANGE', KEYS[3], 0, n - 1)
  local seen = {}
  for _, host in ipairs(hosts) do seen[host] = true end
  for _, host in ipairs(redis.call('ZREVRANGE', KEYS[3], 0, n - 1)) do
    if not seen[host] then hosts[#hosts + 1] = host end
  end
else
  return reply
end
if #hosts == 0 then return reply end
if not bodies then  -- in chunks: unpack takes a few thousand values at most
  bodies = {}
  for first = 1, #hosts, 1000 do
    local chunk = redis.call('HMGET', KEYS[1], unpack(hosts, first, math.min(first + 999, #hosts)))
    for _, body in ipairs(chunk) do bodies[#bodies + 1] = body end
  end
end
for i, host in ipairs(hosts) do
  if bodies[i] and not mine[host] then
    reply[#reply + 1] = host
    reply[#reply + 1] = bodies[i]
  end
end
return reply
