-- query.lua: one consistent snapshot of an account: every field of its hash (money, status, buckets,
-- sessions, tier counters; see lib.lua).
-- KEYS[1] account hash

return redis.call('HGETALL', KEYS[1])
