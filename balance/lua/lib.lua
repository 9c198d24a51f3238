-- lib.lua: prepended to every script of this folder when it is loaded (balance/scripts.py).
--
-- Money is integer micro-units. Lua numbers are doubles, exact to 2^53; values cross into Redis only
-- through fmt() (string.format '%d'), never through tostring (which prints 1e+14 and loses digits).
--
-- Account hash fields: kind (prepaid|postpaid), cur, plan, st (status), lim (credit limit),
--   bal (available money), rsv (money held by reservations), cy:<service>:<cycle> (tier counters).
-- Bucket hash: field bucket id -> msgpack {s=service, n=units left (incl. reserved), r=reserved,
--   e=expiry ms, p=priority}.
-- Session hash: field session id -> msgpack {v=version, st=start ms, exp=expiry ms,
--   it={[item]={s=service, off=units used, pr=raw money rated, g=granted units, rm=reserved money,
--   rb=reserved bucket units, ba={[bucket id]=units}}}}.
-- Charge stream entry fields: id, a (account), k (kind: usage|event|topup|refund|expiry),
--   s (service), i (item), sess, u (units), bu (units taken from buckets), m (signed money moved:
--   debits negative), rel (reserved money released, expiry only), bal, rsv (after), t (ms), f (flags).

local OK, DUPLICATE, NEED_VIEW, NEED_QUOTE, UNKNOWN_ACCOUNT, REFUSED = 0, 1, 2, 3, 4, 5

local function fmt(n)
  return string.format('%d', n)
end

local function load_account(key)
  local f = redis.call('HMGET', key, 'kind', 'st', 'plan', 'lim', 'bal', 'rsv', 'cur')
  if not f[1] then
    return nil
  end
  return {kind = f[1], st = f[2], plan = f[3], lim = tonumber(f[4]), bal = tonumber(f[5]),
          rsv = tonumber(f[6]), cur = f[7]}
end

local function save_money(key, acct)
  redis.call('HSET', key, 'bal', fmt(acct.bal), 'rsv', fmt(acct.rsv))
end

-- All buckets of an account, in consumption order: priority, then earliest expiry, then id.
local function load_buckets(key)
  local raw = redis.call('HGETALL', key)
  local out = {}
  for i = 1, #raw, 2 do
    local b = cmsgpack.unpack(raw[i + 1])
    b.id = raw[i]
    out[#out + 1] = b
  end
  table.sort(out, function(x, y)
    if x.p ~= y.p then return x.p < y.p end
    if x.e ~= y.e then return x.e < y.e end
    return x.id < y.id
  end)
  return out
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

-- Write back changed buckets; a bucket with nothing left and nothing reserved is removed.
local function save_buckets(key, buckets)
  for _, b in ipairs(buckets) do
    if b.dirty then
      b.dirty = nil
      local id = b.id
      b.id = nil
      if b.n <= 0 and b.r <= 0 then
        redis.call('HDEL', key, id)
      else
        redis.call('HSET', key, id, cmsgpack.pack(b))
      end
      b.id = id
    end
  end
end

-- Give back the bucket units an item holds (reserved, not consumed).
local function release_bucket_units(by_id, alloc)
  for bid, n in pairs(alloc) do
    local b = by_id[bid]
    if b then
      b.r = math.max(0, b.r - n)
      b.dirty = true
    end
  end
end

-- Consume up to `units` from an item's allocation (in bucket order) and release the rest.
local function consume_bucket_units(buckets, alloc, units)
  for _, b in ipairs(buckets) do
    local held = alloc[b.id]
    if held then
      local take = math.min(held, units)
      b.n = b.n - take
      b.r = math.max(0, b.r - held)
      units = units - take
      b.dirty = true
    end
  end
end

-- Reserve up to `want` units of a service from unexpired buckets; returns units and allocation.
local function reserve_bucket_units(buckets, svc, want, now)
  local alloc, got = {}, 0
  for _, b in ipairs(buckets) do
    if got >= want then break end
    if b.s == svc and b.e > now and b.n > b.r then
      local take = math.min(b.n - b.r, want - got)
      b.r = b.r + take
      b.dirty = true
      alloc[b.id] = take
      got = got + take
    end
  end
  return got, alloc
end

local function add_record(stream, id, acct_id, acct, kind, fields)
  local args = {stream, '*', 'id', id, 'a', acct_id, 'k', kind}
  for k, v in pairs(fields) do
    args[#args + 1] = k
    if type(v) == 'number' then args[#args + 1] = fmt(v) else args[#args + 1] = v end
  end
  args[#args + 1] = 'bal'
  args[#args + 1] = fmt(acct.bal)
  args[#args + 1] = 'rsv'
  args[#args + 1] = fmt(acct.rsv)
  return redis.call('XADD', unpack(args))
end

local function finish(idem_key, ttl, payload)
  redis.call('SET', idem_key, payload, 'EX', ttl)
  return {OK, payload}
end
