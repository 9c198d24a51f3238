-- fee.lua: a fee (recurring or one-off) debited from an account, with its charge record.
-- KEYS[1] account hash   KEYS[2] idempotency key   KEYS[3] charge stream
-- ARGV[1] JSON request: k, now, ittl, aid, kind ("fee"), m (> 0, the fee), s (service: "fees"), ref (which
--   fee for which period, e.g. "subscription@2026-11")
-- Returns {status, payload}: OK {bal, rsv}; DUPLICATE (first payload); UNKNOWN_ACCOUNT; REFUSED "funds" (the
-- available money plus the credit limit cannot pay it: nothing moves) or "range".
-- ittl 0 keeps the answer for good: a fee of a period is debited once however late it is retried.

local prev = redis.call('GET', KEYS[2])
if prev then
  return {DUPLICATE, prev}
end
local req = cjson.decode(ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'bal', 'rsv', 'lim')
if not v[1] then
  return {UNKNOWN_ACCOUNT, ''}
end
if req.m < 1 or req.m > MAX_EXACT then
  return {REFUSED, 'range'}
end
local acct = {bal = tonumber(v[1]), rsv = tonumber(v[2])}
if acct.bal + tonumber(v[3] or 0) < req.m then
  return {REFUSED, 'funds'}
end
acct.bal = acct.bal - req.m
redis.call('HSET', KEYS[1], 'bal', fmt(acct.bal))
add_record(KEYS[3], req.aid .. ':f:' .. req.k, req.aid, acct, req.kind,
           {s = req.s, m = -req.m, t = req.now, ref = req.ref})
return finish(KEYS[2], req.ittl, cmsgpack.pack({bal = acct.bal, rsv = acct.rsv}))
