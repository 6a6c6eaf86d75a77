-- Publish host summaries to the fleet view, newest generation wins.
--
-- KEYS[1]  P:{fleet}:summary   hash: host -> summary JSON (starts with {"gen":N)
-- KEYS[2]  P:{fleet}:changes   zset: host -> sequence number of its last published change
-- ARGV[1]  "1" to write even if not newer (a reading of the truth: collect, cleanup), else "0"
-- ARGV[2..] pairs: host, summary
--
-- Returns {sequence number after the call, hosts written}, or {-1, 0} if either key is not
-- ours (the view is a hint: nothing is written and nobody depends on it for correctness).
-- Summaries of one host can arrive out of order from several schedulers; the generation
-- (bumped atomically with every change of the host) keeps an older one from winning.

local sk, ck = redis.call('TYPE', KEYS[1])['ok'], redis.call('TYPE', KEYS[2])['ok']
if (sk ~= 'none' and sk ~= 'hash') or (ck ~= 'none' and ck ~= 'zset') then return {-1, 0} end
local top = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local seq = tonumber(top[2] or 0)
local force = ARGV[1] == '1'
local written = 0
for i = 2, #ARGV, 2 do
  local host, body = ARGV[i], ARGV[i + 1]
  local gen = tonumber(string.match(body, '^{"gen":(%d+)'))
  if gen then
    local current = redis.call('HGET', KEYS[1], host)
    local known = current and tonumber(string.match(current, '^{"gen":(%d+)'))
    if force or not known or gen > known then
      seq = seq + 1
      redis.call('HSET', KEYS[1], host, body)
      redis.call('ZADD', KEYS[2], seq, host)
      written = written + 1
    end
  end
end
return {seq, written}
