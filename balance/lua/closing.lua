-- closing.lua: mark a session closed (its last running total and start), unless a mark is there already.
-- KEYS[1] closed-session mark   ARGV[1] "<total>|<start>"   ARGV[2] seconds to keep the mark
-- Returns the mark found (nothing written), or false once ARGV[1] is written: one round trip where a
-- GET, then a SET after it, were two.

local found = redis.call('GET', KEYS[1])
if found then
  return found
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
