-- stream_ack.lua: acknowledge charge records a consumer group has stored, and trim what every group has.
-- KEYS[1] charge stream   ARGV[1] consumer group   ARGV[2..] entry ids to acknowledge (may be none)
-- Returns {entries left, id of the oldest entry left or ""}: the sink's lag.
--
-- An entry is trimmed once no group can need it again: below every group's oldest pending entry and
-- at or below its last delivered one. So a record leaves Redis only after every reader acknowledged
-- it, and a reader acknowledges only after its copy is committed.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, ''}
end
local CHUNK = 1000  -- unpack() has a stack limit
for i = 2, #ARGV, CHUNK do
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, math.min(i + CHUNK - 1, #ARGV)))
end

local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function before(a, b)
  local ams, aseq = split(a)
  local bms, bseq = split(b)
  if ams ~= bms then return ams < bms end
  return aseq < bseq
end

local floor = nil
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local mark
  if info['pending'] > 0 then
    mark = redis.call('XPENDING', KEYS[1], info['name'])[2]
  else
    local ms, seq = split(info['last-delivered-id'])
    mark = fmt(ms) .. '-' .. fmt(seq + 1)
  end
  if floor == nil or before(mark, floor) then floor = mark end
end
if floor ~= nil then
  redis.call('XTRIM', KEYS[1], 'MINID', floor)
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
return {redis.call('XLEN', KEYS[1]), first[1] and first[1][1] or ''}
