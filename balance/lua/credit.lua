-- credit.lua: money into an account (top-up, refund, adjustment) with its charge record.
-- KEYS[1] account hash   KEYS[2] idempotency key   KEYS[3] charge stream
-- ARGV[1] JSON request: k, now, ittl, aid, kind (topup|refund|adjustment|billed), m (> 0), s (service or ""),
--   ref (reference text); ARGV[2] notification channel (PUBLISH "credit|<account>")
-- Returns {status, payload}: OK {bal, rsv}; DUPLICATE (first payload); UNKNOWN_ACCOUNT; REFUSED "range".
-- ittl 0 keeps the answer for good (top-ups).

local prev = redis.call('GET', KEYS[2])
if prev then
  return {DUPLICATE, prev}
end
local req = cjson.decode(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'bal', 'rsv')
if not v[1] then
  return {UNKNOWN_ACCOUNT, ''}
end
local acct = {bal = tonumber(v[1]) + req.m, rsv = tonumber(v[2])}
if req.m < 1 or acct.bal > MAX_EXACT then
  return {REFUSED, 'range'}
end
redis.call('HSET', KEYS[1], 'bal', fmt(acct.bal))
add_record(KEYS[3], req.aid .. ':c:' .. req.k, req.aid, acct, req.kind,
           {s = req.s, m = req.m, t = req.now, ref = req.ref})
-- tell the servers: sessions starved of money may get grants again (RAR)
redis.call('PUBLISH', ARGV[2], 'credit|' .. req.aid)
return finish(KEYS[2], req.ittl, cmsgpack.pack({bal = acct.bal, rsv = acct.rsv}))
