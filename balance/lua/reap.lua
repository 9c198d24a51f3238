-- reap.lua: return the reservations of sessions of one account whose time ran out.
-- KEYS[1] account hash   KEYS[2] bucket hash   KEYS[3] session hash   KEYS[4] reaper index   KEYS[5] stream
-- ARGV[1] now ms, ARGV[2] account id, ARGV[3..] session ids the caller saw due in the index.
-- A session renewed since the caller looked (exp > now) is left alone. Returns the number reaped.
-- Reaping moves money from reserved back to available: balance + reserved stays the same.

local now = tonumber(ARGV[1])
local aid = ARGV[2]
local acct = load_account(KEYS[1])
local buckets, by_id = nil, nil
local reaped = 0
for i = 3, #ARGV do
  local sid = ARGV[i]
  local member = aid .. '|' .. sid
  local raw = redis.call('HGET', KEYS[3], sid)
  if not raw then
    redis.call('ZREM', KEYS[4], member)
  else
    local session = cmsgpack.unpack(raw)
    if session.exp <= now then
      if not buckets then
        buckets = load_buckets(KEYS[2])
        by_id = bucket_index(buckets)
      end
      local released = 0
      for _, st in pairs(session.it) do
        released = released + st.rm
        release_bucket_units(by_id, st.ba)
      end
      if acct then
        acct.rsv = acct.rsv - released
        acct.bal = acct.bal + released
        add_record(KEYS[5], 'expiry:' .. aid .. ':' .. sid .. ':' .. fmt(session.v), aid, acct, 'expiry',
                   {sess = sid, m = 0, rel = released, t = now, f = ''})
      end
      redis.call('HDEL', KEYS[3], sid)
      redis.call('ZREM', KEYS[4], member)
      reaped = reaped + 1
    else
      redis.call('ZADD', KEYS[4], session.exp, member)
    end
  end
end
if acct and reaped > 0 then
  save_money(KEYS[1], acct)
  save_buckets(KEYS[2], buckets)
end
return reaped
