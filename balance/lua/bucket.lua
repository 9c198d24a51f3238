-- bucket.lua: add a unit bucket to an account, once per bucket id.
-- KEYS[1] account hash
-- ARGV[1] bucket id, ARGV[2] service, ARGV[3] units, ARGV[4] expiry ms, ARGV[5] priority
-- Returns 1 added, 0 already present, -1 no such account.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local raw = redis.call('HGET', KEYS[1], 'bkt')
local all = raw and cmsgpack.unpack(raw) or {}
if all[ARGV[1]] then
  return 0
end
all[ARGV[1]] = {s = ARGV[2], n = tonumber(ARGV[3]), r = 0, e = tonumber(ARGV[4]), p = tonumber(ARGV[5])}
redis.call('HSET', KEYS[1], 'bkt', cmsgpack.pack(all))
return 1
