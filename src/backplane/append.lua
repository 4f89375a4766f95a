-- ringcast backplane: append one publish batch to a topic, atomically (issue 14).
--
-- KEYS[1]  the topic's meta hash   PREFIX:{TOPIC}:m  (e = epoch hex, o = last offset, r = run_id)
-- KEYS[2]  the topic's Stream      PREFIX:{TOPIC}:s  (entry ID = offset; fields d, e, b, t)
-- ARGV[1]  the topic's channel     PREFIX:{TOPIC}
-- ARGV[2]  MAXLEN ~ of the Stream  (--history-messages)
-- ARGV[3]  TTL of the Stream, s    (--history-secs: nothing older is ever replayed)
-- ARGV[4]  TTL of the meta, s      (longer: an idle topic keeps its epoch)
-- ARGV[5]  a fresh epoch (hex), used only when this topic starts a new one
-- ARGV[6]  the run_id of the Redis process serving the caller's connection, as its INFO
--          answered when the connection was made (a connection never outlives its process,
--          so it is this process's). Asking INFO here instead took half of each call's time.
-- ARGV[7..] per message: event name ('' for none), 'b' binary or 't' text, payload
--
-- Returns { epoch, first offset, last offset, 1 if a new epoch began else 0 }.
-- Each message is PUBLISHed as "EPOCH:OFFSET\nFLAG\nEVENT\nPAYLOAD" (an event name never holds
-- a newline), so a subscriber needs nothing else to deliver it.

if redis.replicate_commands then
  redis.replicate_commands()
end

local run_id = ARGV[6]

local meta = redis.call('HMGET', KEYS[1], 'e', 'o', 'r')
local epoch, last, fresh = meta[1], tonumber(meta[2]), 0
if not epoch or not last or meta[3] ~= run_id then
  -- A missing meta (new or expired topic) or one written by another Redis process (a restart
  -- that may have lost acknowledged writes, a promoted replica): positions from before may be
  -- reused, so the topic starts a new epoch and its old entries are dropped.
  if epoch == ARGV[5] then
    return redis.error_reply('ringcast: epoch collision')
  end
  epoch, last, fresh = ARGV[5], 0, 1
  redis.call('DEL', KEYS[2])
end

local now = redis.call('TIME')
local ms = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local first = last + 1
for i = 7, #ARGV - 2, 3 do
  last = last + 1
  local id = string.format('%d-0', last)
  local ev, flag, data = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id, 'd', data, 'e', ev, 'b', flag, 't', ms)
  redis.call('PUBLISH', ARGV[1], epoch .. ':' .. string.format('%d', last) .. '\n' .. flag .. '\n' .. ev .. '\n' .. data)
end

redis.call('HSET', KEYS[1], 'e', epoch, 'o', string.format('%d', last), 'r', run_id)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return { epoch, first, last, fresh }
