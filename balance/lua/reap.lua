-- reap.lua: return the reservations of sessions of one account whose time ran out.
-- KEYS[1] account hash   KEYS[2] reaper index   KEYS[3] charge stream
-- ARGV[1] now ms, ARGV[2] account id, ARGV[3..] session ids the caller saw due in the index.
-- A session renewed since (its own exp > now) is re-scored in the index and left alone.
-- Reaping moves money from reserved back to available: balance + reserved stays the same.
-- Returns the number of sessions reaped.

local now = tonumber(ARGV[1])
local aid = ARGV[2]
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = 's:' .. ARGV[i] end
local acct = load_account(KEYS[1], fields)
local reaped, gone = 0, {}
local by_id = acct and bucket_index(acct.buckets) or {}
for i = 3, #ARGV do
  local sid = ARGV[i]
  local member = aid .. '|' .. sid
  local raw = acct and acct.extra['s:' .. sid]
  if not raw then
    redis.call('ZREM', KEYS[2], member)
  else
    local session = cmsgpack.unpack(raw)
    if session.exp <= now then
      local released = 0
      for _, st in pairs(session.it) do
        released = released + st.rm
        release_bucket_units(acct, by_id, st.ba)
      end
      acct.rsv = acct.rsv - released
      acct.bal = acct.bal + released
      add_record(KEYS[3], 'expiry:' .. aid .. ':' .. sid .. ':' .. fmt(session.v), aid, acct, 'expiry',
                 {sess = sid, m = 0, rel = released, t = now, f = ''})
      gone[#gone + 1] = 's:' .. sid
      redis.call('ZREM', KEYS[2], member)
      reaped = reaped + 1
    else
      redis.call('ZADD', KEYS[2], session.exp, member)
    end
  end
end
if reaped > 0 then
  save_account(KEYS[1], acct, nil)
  redis.call('HDEL', KEYS[1], unpack(gone))
end
return reaped
