-- account.lua: create or update an account's attributes; never moves money of an existing account.
-- KEYS[1] account hash
-- ARGV: mode ("put": create or update; "restore": create only, with balance ARGV[7]; "status": set
--   status ARGV[5] of an existing account), kind, cur, plan, st, lim, bal, notification channel,
--   account id (status changes PUBLISH "status|<account>|<status>")
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
  redis.call('HSET', KEYS[1], 'kind', ARGV[2], 'cur', ARGV[3], 'plan', ARGV[4], 'st', ARGV[5], 'lim', ARGV[6])
  return 2
end
local bal = mode == 'restore' and ARGV[7] or '0'
redis.call('HSET', KEYS[1], 'kind', ARGV[2], 'cur', ARGV[3], 'plan', ARGV[4], 'st', ARGV[5], 'lim', ARGV[6],
           'bal', bal, 'rsv', '0')
return 1
