-- Release a host's lock, only if the caller still holds it (never a blind DEL).
--
-- KEYS[1]  P:resource:{H}:lock
-- ARGV[1]  the caller's token
--
-- Returns 1 if released, 0 if the lock had expired or belongs to someone else (or the key
-- holds something that is not a lock, which is left alone).

if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
