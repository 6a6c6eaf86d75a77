-- Read the fleet view: every summary, or those published after a sequence number.
--
-- KEYS[1]  P:{fleet}:summary   hash: host -> summary JSON
-- KEYS[2]  P:{fleet}:changes   zset: host -> sequence number of its last published change
-- ARGV[1]  the last sequence number the caller has seen ("0": send everything)
--
-- Returns {server time "sec.usec", sequence number now, host, summary, host, summary, ...};
-- the sequence number is -1 if either key is not ours (then no summaries).

local t = redis.call('TIME')
local now = string.format('%d.%06d', tonumber(t[1]), tonumber(t[2]))
local sk, ck = redis.call('TYPE', KEYS[1])['ok'], redis.call('TYPE', KEYS[2])['ok']
if (sk ~= 'none' and sk ~= 'hash') or (ck ~= 'none' and ck ~= 'zset') then return {now, -1} end
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local seq = tonumber(top[2] or 0)
local since = tonumber(ARGV[1]) or 0
local reply = {now, seq}
if since == 0 or since > seq then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all do reply[#reply + 1] = all[i] end
  return reply
end
local hosts = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. since, '+inf')
if #hosts == 0 then return reply end
local bodies = redis.call('HMGET', KEYS[1], unpack(hosts))
for i, host in ipairs(hosts) do
  if bodies[i] then
    reply[#reply + 1] = host
    reply[#reply + 1] = bodies[i]
  end
end
return reply
