-- ringcast backplane: the messages after a position, or a reset (issue 14).
--
-- KEYS[1]  the topic's meta hash   PREFIX:{TOPIC}:m
-- KEYS[2]  the topic's Stream      PREFIX:{TOPIC}:s
-- ARGV[1]  the client's epoch (hex), '' for "no position: just the current one", '*' for
--          "everything retained of the current epoch" (a node that starts following the topic)
-- ARGV[2]  the client's offset
-- ARGV[3]  at most this many entries
-- ARGV[4]  --history-secs: an entry older than this is gone
-- ARGV[5]  the run_id of the Redis process serving the caller's connection (as append.lua's)
-- ARGV[6]  a fresh epoch (hex), used only when this topic starts a new one
-- ARGV[7]  TTL of the meta, s
--
-- Returns { reset (0/1), epoch, last offset, entries } where entries are what XRANGE gives
-- ({ id, { field, value, ... } } each, oldest first) and are present only on a replay. A topic with no meta has epoch '' and offset 0. A reset when the epoch
-- differs, the offset is ahead of the topic's, or the entry right after it was trimmed (by
-- count) or is older than --history-secs; never a partial window.

if redis.replicate_commands then
  redis.replicate_commands()
end

local meta = redis.call('HMGET', KEYS[1], 'e', 'o', 'r')
local epoch, last = meta[1], tonumber(meta[2])
if not epoch or not last then
  epoch, last = '', 0
elseif meta[3] ~= ARGV[5] then
  -- Written by another Redis process (a restart from a snapshot, a promoted replica): its
  -- last positions may be lost and handed out again. The topic begins its new epoch now, as
  -- the next append would, so a client reset here to the new epoch's start is not reset again
  -- by that append, and nothing of the old epoch is replayed.
  if epoch == ARGV[6] then
    return redis.error_reply('ringcast: epoch collision')
  end
  epoch, last = ARGV[6], 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', '0', 'r', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
end
if ARGV[1] == '' then
  return { 0, epoch, last }
end
if ARGV[1] == '*' then
  -- A node starting to follow the topic: what is retained of the current epoch, oldest
  -- first, no older than --history-secs; never a reset.
  local entries = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', ARGV[3])
  local now = redis.call('TIME')
  local oldest = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[4]) * 1000
  local kept = {}
  for _, e in ipairs(entries) do
    local f = e[2]
    for i = 1, #f, 2 do
      if f[i] == 't' and tonumber(f[i + 1]) >= oldest then
        kept[#kept + 1] = e
      end
    end
  end
  return { 0, epoch, last, kept }
end
local since = tonumber(ARGV[2])
if not since or ARGV[1] ~= epoch or since > last then
  return { 1, epoch, last }
end
if since == last then
  return { 0, epoch, last }
end
local from = string.format('%d-0', since + 1)
local entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', ARGV[3])
local head = entries[1]
if not head or head[1] ~= from then
  return { 1, epoch, last }
end
local fields = head[2]
local t
for i = 1, #fields, 2 do
  if fields[i] == 't' then
    t = tonumber(fields[i + 1])
  end
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if not t or ms - t > tonumber(ARGV[4]) * 1000 then
  return { 1, epoch, last }
end
return { 0, epoch, last, entries }
