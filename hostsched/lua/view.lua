-- The fleet view: publish host summaries (newest generation wins) and read what changed.
--
-- KEYS[1]  P:{fleet}:summary   hash: host -> summary JSON (starts with {"gen":N)
-- KEYS[2]  P:{fleet}:changes   zset: host -> sequence number of its last published change
-- ARGV[1]  the last sequence number the caller has seen: "0" for every summary, "-" for none
-- ARGV[2]  "1" to write even if not newer (the caller read the hosts' own keys), else "0"
-- ARGV[3..] pairs: host, summary, to publish
--
-- Returns {server time "sec.usec", sequence number now, host, summary, host, summary, ...}:
-- the summaries published after ARGV[1], except those this call wrote (the caller has them).
-- The sequence number is -1 if either key is not ours: nothing is written and nothing read,
-- as the view is only a hint; nobody depends on it for correctness.
-- Summaries of one host can arrive out of order from several schedulers; the generation,
-- bumped atomically with every change of the host, keeps an older one from winning.

local t = redis.call('TIME')
local reply = {string.format('%d.%06d', tonumber(t[1]), tonumber(t[2])), -1}
local sk, ck = redis.call('TYPE', KEYS[1])['ok'], redis.call('TYPE', KEYS[2])['ok']
if (sk ~= 'none' and sk ~= 'hash') or (ck ~= 'none' and ck ~= 'zset') then return reply end
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local seq = tonumber(top[2] or 0)
local since = ARGV[1] ~= '-' and tonumber(ARGV[1]) or nil

local force, mine = ARGV[2] == '1', {}
for i = 3, #ARGV, 2 do
  local host, body = ARGV[i], ARGV[i + 1]
  local gen = tonumber(string.match(body, '^{"gen":(%d+)'))
  if gen then
    local current = redis.call('HGET', KEYS[1], host)
    local known = current and tonumber(string.match(current, '^{"gen":(%d+)'))
    if force or not known or gen > known then
      seq = seq + 1
      redis.call('HSET', KEYS[1], host, body)
      redis.call('ZADD', KEYS[2], seq, host)
      mine[host] = true
    end
  end
end
reply[2] = seq
if not since then return reply end

local hosts, bodies
if since <= 0 or since > seq then  -- everything (a reader that is new, or from before a reset)
  local all = redis.call('HGETALL', KEYS[1])
  hosts, bodies = {}, {}
  for i = 1, #all, 2 do hosts[#hosts + 1] = all[i]; bodies[#bodies + 1] = all[i + 1] end
else
  hosts = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. since, '+inf')
  if #hosts == 0 then return reply end
  bodies = redis.call('HMGET', KEYS[1], unpack(hosts))
end
for i, host in ipairs(hosts) do
  if bodies[i] and not mine[host] then
    reply[#reply + 1] = host
    reply[#reply + 1] = bodies[i]
  end
end
return reply
