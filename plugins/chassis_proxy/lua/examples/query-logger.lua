--[[
query-logger.lua: log every query with how long the server took to answer it.

The query is sent as an injection (without buffering: the result still streams to the
client as it arrives), which makes read_query_result() see its timings.

  chassis --plugins=proxy --proxy-lua-script=query-logger.lua
  ... (message) [worker 123] [conn 7] (query-logger.lua:24) 0.412 ms  ok  SELECT * FROM t
--]]

local chassis = require("chassis")

function read_query(packet)
	if packet:byte() ~= proxy.COM_QUERY then return end
	-- the id 1 marks "the client's own query"
	proxy.queries:append(1, packet)
	return proxy.PROXY_SEND_QUERY
end

function read_query_result(inj)
	if inj.id ~= 1 then return end
	local res = inj.resultset
	local status = res.query_status == proxy.MYSQLD_PACKET_ERR and "ERR" or "ok"
	chassis.message(string.format("%.3f ms  %s  %s", inj.response_time / 1000, status, inj.query:sub(2)))
end
