-- account.lua: create or update an account's attributes; never moves money of an existing account.
-- KEYS[1] account hash
-- ARGV: mode ("put": create or update; "restore": create only, with balance ARGV[7]; "status": set
--   status ARGV[5] of an existing account), kind, cur, plan, st, lim, bal, notification channel,
--   account id (status and plan changes PUBLISH "status|<account>|<status>")
-- Returns 1 created, 2 updated, 0 nothing done (restore of an existing / status of a missing account).

local mode = ARGV[1]
local exists = redis.call('EXISTS', KEYS[1]) == 1
if mode == 'status' then
  if not exists then return 0 end
  redis.call('HSET', KEYS[1], 'st', ARGV[5])
  -- tell the servers: sessions of a suspended/blocked/closed account are cut (ASR / Disconnect)
  redis.call('PUBLISH', ARGV[8], 'status|' .. ARGV[9] .. '|' .. ARGV[5])
  return 2
end
if exists then
  if mode == 'restore' then return 0 end
  local before = redis.call('HMGET', KEYS[1], 'plan', 'st')
  redis.call('HSET', KEYS[1], 'kind', ARGV[2], 'cur', ARGV[3], 'plan', ARGV[4], 'st', ARGV[5], 'lim', ARGV[6])
  if before[1] ~= ARGV[4] or before[2] ~= ARGV[5] then
    -- a new plan or status: servers re-authorize running sessions (CoA) or cut them
    redis.call('PUBLISH', ARGV[8], 'status|' .. ARGV[9] .. '|' .. ARGV[5])
  end
  return 2
end
local bal = mode == 'restore' and ARGV[7] or '0'
redis.call('HSET', KEYS[1], 'kind', ARGV[2], 'cur', ARGV[3], 'plan', ARGV[4], 'st', ARGV[5], 'lim', ARGV[6],
           'bal', bal, 'rsv', '0')
return 1
