-- lib.lua: prepended to every script of this folder when it is loaded (balance/scripts.py).
--
-- Requests arrive as JSON (cjson: readable in SLOWLOG/MONITOR, no NUL bytes); replies and stored
-- state are msgpack (cmsgpack keeps integers integral, where cjson.encode would print 1e+14).
-- Money is integer micro-units. Lua numbers are doubles, exact to 2^53; values cross into Redis only
-- through fmt() (string.format '%d'), never through tostring (which prints 1e+14 and loses digits).
--
-- Everything about an account lives in ONE hash, so a step reads it with one HMGET and writes it with
-- one HSET (each redis.call costs several microseconds):
--   kind (prepaid|postpaid), cur, plan, st (status), lim (credit limit), bal (available money),
--   rsv (money held by reservations),
--   bkt: msgpack {[bucket id]={s=service, n=units left (incl. reserved), r=reserved, e=expiry ms, p=priority}},
--   s:<session>: msgpack {v=version, st=start ms, exp=expiry ms, n=last sequence number, plan=plan the
--     session started under, kept=1 once the reaper returned its reservations, it={[item]={s=service, off=units used,
--     pr=raw money rated, g=granted units, rm=reserved money, rb=reserved bucket units, ba={[bucket]=units}}}},
--   cy:<service>:<cycle>: tier counter (charged units this cycle).
-- The partition's reaper index (zset "<account>|<session>" -> expiry ms) gets a member when a session is
-- created; its score may lag behind renewals: the reap script re-checks the session's own expiry.
-- Charge stream entry fields, always all of them and in this order (add_record): id (unique across
--   accounts: starts with the account id), a (account), k (kind: usage|event|topup|refund|adjustment|billed|fee|
--   expiry), s (service), i (item), sess, u (units), bu (units taken from buckets), m (signed money moved:
--   debits negative), rel (reserved money released, expiry only), ref, t (ms), f (flags), bal, rsv (after).

local OK, DUPLICATE, NEED_VIEW, NEED_QUOTE, UNKNOWN_ACCOUNT, REFUSED = 0, 1, 2, 3, 4, 5
local MAX_EXACT = 9007199254740991  -- 2^53 - 1: beyond it doubles lose integers
local ACCOUNT_FIELDS = {'kind', 'st', 'plan', 'lim', 'bal', 'rsv', 'cur', 'bkt'}

local function fmt(n)
  return string.format('%d', n)
end

-- The account's fields plus `extra` fields (session, counters) in one HMGET; nil if there is no account.
local function load_account(key, extra)
  local fields = {unpack(ACCOUNT_FIELDS)}
  for _, f in ipairs(extra) do fields[#fields + 1] = f end
  local v = redis.call('HMGET', key, unpack(fields))
  if not v[1] then
    return nil
  end
  local acct = {kind = v[1], st = v[2], plan = v[3], lim = tonumber(v[4]), bal = tonumber(v[5]),
                rsv = tonumber(v[6]), cur = v[7], extra = {}}
  -- buckets, in consumption order: priority, then earliest expiry, then id
  local buckets = {}
  if v[8] then
    for id, b in pairs(cmsgpack.unpack(v[8])) do
      b.id = id
      buckets[#buckets + 1] = b
    end
    table.sort(buckets, function(x, y)
      if x.p ~= y.p then return x.p < y.p end
      if x.e ~= y.e then return x.e < y.e end
      return x.id < y.id
    end)
  end
  acct.buckets = buckets
  acct.buckets_dirty = false
  for i, f in ipairs(extra) do acct.extra[f] = v[#ACCOUNT_FIELDS + i] end
  return acct
end

-- Field/value pairs that write the account's money (and buckets when they changed) back.
local function account_writes(acct)
  local w = {'bal', fmt(acct.bal), 'rsv', fmt(acct.rsv)}
  if acct.buckets_dirty then
    local all, any = {}, false
    for _, b in ipairs(acct.buckets) do
      if b.n > 0 or b.r > 0 then
        all[b.id] = {s = b.s, n = b.n, r = b.r, e = b.e, p = b.p}
        any = true
      end
    end
    if any then
      w[#w + 1] = 'bkt'
      w[#w + 1] = cmsgpack.pack(all)
    else
      acct.drop_buckets = true
    end
  end
  return w
end

local function save_account(key, acct, more)
  local w = account_writes(acct)
  if more then
    for _, x in ipairs(more) do w[#w + 1] = x end
  end
  redis.call('HSET', key, unpack(w))
  if acct.drop_buckets then redis.call('HDEL', key, 'bkt') end
end

local function bucket_index(buckets)
  local by_id = {}
  for _, b in ipairs(buckets) do by_id[b.id] = b end
  return by_id
end

local function bucket_available(buckets, svc, now)
  local n = 0
  for _, b in ipairs(buckets) do
    if b.s == svc and b.e > now and b.n > b.r then n = n + (b.n - b.r) end
  end
  return n
end

-- Give back the bucket units an item holds (reserved, not consumed).
local function release_bucket_units(acct, by_id, alloc)
  for bid, n in pairs(alloc) do
    local b = by_id[bid]
    if b then
      b.r = math.max(0, b.r - n)
      acct.buckets_dirty = true
    end
  end
end

-- Consume up to `units` from an item's allocation (in bucket order) and release the rest.
local function consume_bucket_units(acct, alloc, units)
  for _, b in ipairs(acct.buckets) do
    local held = alloc[b.id]
    if held then
      local take = math.min(held, units)
      b.n = b.n - take
      b.r = math.max(0, b.r - held)
      units = units - take
      acct.buckets_dirty = true
    end
  end
end

-- Reserve up to `want` units of a service from unexpired buckets; returns units and allocation.
local function reserve_bucket_units(acct, svc, want, now)
  local alloc, got = {}, 0
  for _, b in ipairs(acct.buckets) do
    if got >= want then break end
    if b.s == svc and b.e > now and b.n > b.r then
      local take = math.min(b.n - b.r, want - got)
      b.r = b.r + take
      acct.buckets_dirty = true
      alloc[b.id] = take
      got = got + take
    end
  end
  return got, alloc
end

-- Every record has every field, in this order ("" where a kind has no value), so a reader can take
-- them by position (balance/charges.py) instead of building a map per record.
local RECORD_FIELDS = {'s', 'i', 'sess', 'u', 'bu', 'm', 'rel', 'ref', 't', 'f'}

local function add_record(stream, id, acct_id, acct, kind, fields)
  local args = {stream, '*', 'id', id, 'a', acct_id, 'k', kind}
  for _, k in ipairs(RECORD_FIELDS) do
    local v = fields[k]
    args[#args + 1] = k
    if type(v) == 'number' then args[#args + 1] = fmt(v) else args[#args + 1] = v or '' end
  end
  args[#args + 1] = 'bal'
  args[#args + 1] = fmt(acct.bal)
  args[#args + 1] = 'rsv'
  args[#args + 1] = fmt(acct.rsv)
  return redis.call('XADD', unpack(args))
end

-- Store the answer for replay: ttl seconds, or for good when ttl is 0 (top-ups: a bank reference must
-- never credit twice, however late it is retried).
local function finish(idem_key, ttl, payload)
  if ttl > 0 then
    redis.call('SET', idem_key, payload, 'EX', ttl)
  else
    redis.call('SET', idem_key, payload)
  end
  return {OK, payload}
end
