-- reap.lua: return the reservations of sessions of one account whose time ran out.
-- KEYS[1] account hash   KEYS[2] reaper index   KEYS[3] charge stream
-- ARGV[1] now ms, ARGV[2] account id, ARGV[3] keep ms, ARGV[4..] session ids seen due in the index.
-- A session renewed since (its own exp > now) is re-scored in the index and left alone. An expired
-- session with reservations gets them returned (money from reserved back to available: balance +
-- reserved stays the same) but keeps its continuation (units and money so far, plan, sequence) for
-- `keep` more ms, so a late report is still rated as the same session; an expired session holding
-- nothing is deleted. Returns the number of sessions whose reservations were returned.

local now = tonumber(ARGV[1])
local aid = ARGV[2]
local keep = tonumber(ARGV[3])
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = 's:' .. ARGV[i] end
local acct = load_account(KEYS[1], fields)
local reaped, gone, kept = 0, {}, {}
local by_id = acct and bucket_index(acct.buckets) or {}
for i = 4, #ARGV do
  local sid = ARGV[i]
  local member = aid .. '|' .. sid
  local raw = acct and acct.extra['s:' .. sid]
  if not raw then
    redis.call('ZREM', KEYS[2], member)
  else
    local session = cmsgpack.unpack(raw)
    if session.exp > now then
      redis.call('ZADD', KEYS[2], session.exp, member)
    else
      local released, held = 0, false
      for _, st in pairs(session.it) do
        if st.rm > 0 or st.rb > 0 then held = true end
        released = released + st.rm
        release_bucket_units(acct, by_id, st.ba)
        st.rm, st.rb, st.g, st.ba = 0, 0, 0, {}
      end
      if held then
        acct.rsv = acct.rsv - released
        acct.bal = acct.bal + released
        add_record(KEYS[3], aid .. ':x:' .. sid .. ':' .. fmt(session.v), aid, acct, 'expiry',
                   {sess = sid, m = 0, rel = released, t = now, f = ''})
        session.exp = now + keep
        session.kept = 1  -- the next step re-indexes it at its real expiry
        kept[#kept + 1] = 's:' .. sid
        kept[#kept + 1] = cmsgpack.pack(session)
        redis.call('ZADD', KEYS[2], session.exp, member)
        reaped = reaped + 1
      else
        gone[#gone + 1] = 's:' .. sid
        redis.call('ZREM', KEYS[2], member)
      end
    end
  end
end
if reaped > 0 then
  save_account(KEYS[1], acct, kept)
end
if #gone > 0 then
  redis.call('HDEL', KEYS[1], unpack(gone))
end
return reaped
