-- event.lua: a one-time event charged at once (direct debit: SMS, content purchase).
-- KEYS[1] account hash   KEYS[2] idempotency key   KEYS[3] charge stream
-- ARGV[1] JSON request: k, now, ittl, aid, plan, s=service, i=item, u=units,
--   c=bucket units the plan assumed cover u (-1: none assumed, price m is for all u), m=money for u-c,
--   cy=tier counter field or "", lo/hi=counter range the price holds for (-1: unused), cu=charged units
-- Returns {status, payload}: OK {code, u, bu, m, bal, rsv, lim, st}; NEED_VIEW {plan, st, cover}:
--   re-price u-cover units with c=cover; DUPLICATE; UNKNOWN_ACCOUNT. When buckets cover all of u
--   no price is needed and none is asked for.
-- Money goes below zero only down to the credit limit: an event the balance cannot pay is refused.

local prev = redis.call('GET', KEYS[2])
if prev then
  return {DUPLICATE, prev}
end
local req = cjson.decode(ARGV[1])
if req.u < 1 or req.m < 0 or req.m > MAX_EXACT then
  return {REFUSED, 'input'}
end
local acct = load_account(KEYS[1], req.cy ~= '' and {req.cy} or {})
if not acct then
  return {UNKNOWN_ACCOUNT, ''}
end
local position = req.cy ~= '' and tonumber(acct.extra[req.cy] or '0') or 0
local now = req.now
local cover = math.min(req.u, bucket_available(acct.buckets, req.s, now))
local assumed = req.c < 0 and 0 or req.c
local money = req.m
if cover == req.u then
  money = 0  -- buckets pay for everything: no price needed
elseif req.plan ~= acct.plan or cover ~= assumed or (req.lo >= 0 and (position < req.lo or position > req.hi)) then
  return {NEED_VIEW, cmsgpack.pack({plan = acct.plan, st = acct.st, cover = cover, cy = position})}
end
local res = {code = 'OK', u = req.u, bu = 0, m = 0}
if acct.st ~= 'active' then
  res.code = 'DENIED'
elseif money > acct.bal + acct.lim then
  res.code = 'NO_MONEY'
else
  if cover > 0 then
    local got, alloc = reserve_bucket_units(acct, req.s, cover, now)
    consume_bucket_units(acct, alloc, got)
  end
  acct.bal = acct.bal - money
  local more = nil
  if req.cy ~= '' and money > 0 then
    more = {req.cy, fmt(position + req.cu)}
  end
  save_account(KEYS[1], acct, more)
  res.bu, res.m = cover, money
  add_record(KEYS[3], req.aid .. ':e:' .. req.k, req.aid, acct, 'event',
             {s = req.s, i = req.i, u = req.u, bu = cover, m = -money, t = now, f = ''})
end
res.bal, res.rsv, res.lim, res.st = acct.bal, acct.rsv, acct.lim, acct.st
return finish(KEYS[2], req.ittl, cmsgpack.pack(res))
