-- session.lua: one credit-control step of a session, every item (rating group) at once.
-- KEYS[1] account hash   KEYS[2] reaper index (zset)   KEYS[3] idempotency key   KEYS[4] charge stream
-- ARGV[1] JSON request:
--   k=idempotency key, now=ms, ttl=reservation ms, ittl=answer replay s, sid=session id, aid=account id,
--   op="I"|"U"|"T", v=session version the plan was made from, plan=plan name it was rated with (a session
--   keeps the plan it started under: checked against the session's plan, else the account's),
--   st=session start ms (new sessions), n=the request's sequence number in its session (0: none; a
--   number not above the last one applied is refused: a late or reordered request), it=array of items:
--     {id, s=service, u=used units, cu=charged units, c=bucket units covering u, m=money for u, raw,
--      r=units to reserve (0: none, -1: nothing affordable), rm=money for r, mn=money of the smallest
--      grant, nx=money of the next increment after r,
--      cy=tier counter field or "", lo/hi=range of that counter (before this item) for which the price
--      holds (-1: not used), fl=flags for the charge record ("unrated": no plan could price it)}
-- Returns {status, msgpack payload}:
--   OK: {v, bal, rsv, lim, st, it={{id, code, g, gb, fin, m, u, over}}}   (also stored for replay)
--   DUPLICATE: the stored payload of the first answer; nothing moved
--   NEED_VIEW: {v, s=session or false, plan, st, cy={field=value}}: the plan was made from a stale view
--   NEED_QUOTE: {[item]=money available to that item}: a grant does not fit; price what does
--   UNKNOWN_ACCOUNT: ""
--   REFUSED: "order" (sequence number not above the last applied one), "input" (negative or duplicate
--   items), "range" (a balance or counter would leave the exact range of Lua numbers); nothing moved
-- Nothing is written before every item has been decided, so NEED_* leave no trace.

local prev = redis.call('GET', KEYS[3])
if prev then
  return {DUPLICATE, prev}
end

local req = cjson.decode(ARGV[1])
local session_field = 's:' .. req.sid
local extra = {session_field}
for _, item in ipairs(req.it) do
  if item.cy ~= '' then extra[#extra + 1] = item.cy end
end
local acct = load_account(KEYS[1], extra)
if not acct then
  return {UNKNOWN_ACCOUNT, ''}
end
local now = req.now

local raw_session = acct.extra[session_field]
local session = raw_session and cmsgpack.unpack(raw_session) or nil
local version = session and session.v or 0
local plan = (session and session.plan) or acct.plan

-- The plan was priced from a view of this session, its plan and the tier counters; the view returned
-- is the stored state, never the half-applied copy below.
local counters, seen = {}, {}
for _, item in ipairs(req.it) do
  if item.cy ~= '' then counters[item.cy] = tonumber(acct.extra[item.cy] or '0') end
  if item.u < 0 or item.m < 0 or item.r < -1 or item.rm < 0 or seen[item.id] then
    return {REFUSED, 'input'}
  end
  seen[item.id] = true
end
local function view()
  local cy = {}
  for _, item in ipairs(req.it) do
    if item.cy ~= '' then cy[item.cy] = tonumber(acct.extra[item.cy] or '0') end
  end
  return {NEED_VIEW, cmsgpack.pack({v = version, s = raw_session and cmsgpack.unpack(raw_session) or false,
                                    plan = plan, st = acct.st, cy = cy})}
end
if req.v ~= version or req.plan ~= plan then
  return view()
end
if req.n > 0 and session and (session.n or 0) >= req.n then
  return {REFUSED, 'order'}
end

if not session then
  session = {v = 0, st = req.st, exp = 0, it = {}, plan = plan}
end
local results, records, quotes, need_quote = {}, {}, {}, false
local terminate = req.op == 'T'

for _, item in ipairs(req.it) do
  local st = session.it[item.id] or {s = item.s, off = 0, pr = 0, g = 0, rm = 0, rb = 0, ba = {}}
  -- commit: the old reservation is settled whatever was used (u may be 0)
  local covered = math.min(item.u, st.rb)
  -- the tier position this item was priced at must still give the same price
  local position = item.cy ~= '' and counters[item.cy] or 0
  if covered ~= item.c or (item.lo >= 0 and (position < item.lo or position > item.hi)) then
    return view()
  end
  consume_bucket_units(acct, st.ba, covered)
  acct.rsv = acct.rsv - st.rm
  acct.bal = acct.bal + st.rm - item.m
  local over = item.u > st.g
  st.off = st.off + item.u
  st.pr = st.pr + item.raw
  st.g, st.rm, st.rb, st.ba = 0, 0, 0, {}
  if item.cy ~= '' then counters[item.cy] = counters[item.cy] + item.cu end
  if item.u > 0 or item.m ~= 0 then
    local flags = item.fl or ''
    if over then flags = flags == '' and 'over' or flags .. ',over' end
    records[#records + 1] = {item = item.id, s = item.s, u = item.u, bu = covered, m = -item.m, f = flags}
  end
  local res = {id = item.id, code = 'OK', g = 0, gb = 0, fin = 0, m = item.m, u = item.u,
               over = over and 1 or 0}
  -- reserve the next grant: unit buckets first, money only when no bucket has units left
  if not terminate and item.r > 0 then
    if acct.st ~= 'active' then
      res.code = 'DENIED'
    else
      local in_buckets = bucket_available(acct.buckets, item.s, now)
      if in_buckets > 0 then
        local got, alloc = reserve_bucket_units(acct, item.s, item.r, now)
        st.g, st.rb, st.ba = got, got, alloc
        res.g, res.gb = got, got
      else
        local room = acct.bal + acct.lim
        if room < item.mn then
          res.code = 'NO_MONEY'
        elseif item.rm <= room then
          acct.bal = acct.bal - item.rm
          acct.rsv = acct.rsv + item.rm
          st.g, st.rm = item.r, item.rm
          res.g = item.r
          if room - item.rm < item.nx then res.fin = 1 end
        else
          quotes[item.id] = math.max(0, room)
          need_quote = true
        end
      end
    end
  elseif not terminate and item.r < 0 then
    -- the planner priced what is left and nothing fits: no grant, no quote round trip
    res.code = 'NO_MONEY'
  end
  session.it[item.id] = st
  results[#results + 1] = res
end

if need_quote then
  return {NEED_QUOTE, cmsgpack.pack(quotes)}
end

if math.abs(acct.bal) > MAX_EXACT or acct.rsv > MAX_EXACT then
  return {REFUSED, 'range'}
end
local member = req.aid .. '|' .. req.sid
local writes = {}
for field, value in pairs(counters) do
  if value > MAX_EXACT then return {REFUSED, 'range'} end
  writes[#writes + 1] = field
  writes[#writes + 1] = fmt(value)
end
if terminate then
  -- release every item of the session, also those the request did not mention
  local by_id = bucket_index(acct.buckets)
  for _, st in pairs(session.it) do
    if st.rm > 0 or st.rb > 0 then
      acct.rsv = acct.rsv - st.rm
      acct.bal = acct.bal + st.rm
      release_bucket_units(acct, by_id, st.ba)
    end
  end
  if raw_session then
    redis.call('HDEL', KEYS[1], session_field)
    redis.call('ZREM', KEYS[2], member)
  end
else
  session.v = version + 1
  session.exp = now + req.ttl
  if req.n > 0 then session.n = req.n end
  -- index a new session, and one the reaper kept (its index score is the keep time, later than now)
  if version == 0 or session.kept then
    session.kept = nil
    redis.call('ZADD', KEYS[2], session.exp, member)
  end
  writes[#writes + 1] = session_field
  writes[#writes + 1] = cmsgpack.pack(session)
end
save_account(KEYS[1], acct, writes)
for n, rec in ipairs(records) do
  add_record(KEYS[4], req.aid .. ':s:' .. req.sid .. ':' .. req.k .. ':' .. n, req.aid, acct, 'usage',
             {s = rec.s, i = rec.item, sess = req.sid, u = rec.u, bu = rec.bu, m = rec.m, t = now, f = rec.f})
end

return finish(KEYS[3], req.ittl, cmsgpack.pack({v = terminate and 0 or session.v, bal = acct.bal,
  rsv = acct.rsv, lim = acct.lim, st = acct.st, it = results}))
