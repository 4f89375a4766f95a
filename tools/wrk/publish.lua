-- wrk script: POST a 128-byte message to /pub/{topic}, spreading over TOPICS topics
-- (env TOPICS, default 10), keep-alive. Works against ringcast and nginx+nchan alike.
--   wrk -t2 -c64 -d10s -s tools/wrk/publish.lua http://127.0.0.1:8080
local topics = tonumber(os.getenv("TOPICS") or "10")
local body = string.rep("x", 128)
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/pub/bench" .. (n % topics), { ["Content-Type"] = "text/plain" }, body)
end
