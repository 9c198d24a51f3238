-- query.lua: one consistent snapshot of an account.
-- KEYS[1] account hash   KEYS[2] bucket hash   KEYS[3] session hash
-- Returns {account fields (HGETALL), bucket fields (HGETALL), session fields (HGETALL)}.

return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3])}
