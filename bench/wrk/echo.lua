-- wrk script for POST /echo: sends payload.json (about 1 KB) as the JSON body of every
-- request, and prints the JSON summary of report.lua at the end.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local f = assert(io.open(dir .. "payload.json", "rb"))
local body = f:read("*a"):gsub("%s+$", "")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
