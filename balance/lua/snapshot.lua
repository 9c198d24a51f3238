-- snapshot.lua: the money of some accounts of one partition and its charge stream's position, at one
-- instant (reconcile compares them with the ledger rows written up to that position).
-- KEYS[1] the partition's charge stream   KEYS[2..] account hashes of that partition
-- Returns {last stream id ("0-0": none yet), {bal, rsv} or false per account (false: no such account)}.

local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
local money = {}
for i = 2, #KEYS do
  local v = redis.call('HMGET', KEYS[i], 'bal', 'rsv')
  if v[1] then money[i - 1] = {v[1], v[2]} else money[i - 1] = false end
end
return {last, money}
