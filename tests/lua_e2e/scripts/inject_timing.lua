-- Injection with timing: before each query the script asks the server for NOW() and
-- throws that result away; the client's own query follows, its result goes to the
-- client untouched, and the script keeps how long it took.
local Q = string.char(proxy.COM_QUERY)

function read_query(packet)
	if packet:byte() ~= proxy.COM_QUERY then return end
	local sql = packet:sub(2)
	if sql == "SHOW QUERY TIMES" then
		local rows = {}
		for i, t in ipairs(proxy.global.times or {}) do rows[i] = t end
		proxy.response = {
			type = proxy.MYSQLD_PACKET_OK,
			resultset = {
				fields = {
					{ name = "query", type = proxy.MYSQL_TYPE_STRING },
					{ name = "started", type = proxy.MYSQL_TYPE_STRING },
					{ name = "query_time", type = proxy.MYSQL_TYPE_LONGLONG },
					{ name = "response_time", type = proxy.MYSQL_TYPE_LONGLONG },
				},
				rows = rows,
			},
		}
		return proxy.PROXY_SEND_RESULT
	end
	proxy.queries:append(1, Q .. "SELECT NOW()", { resultset_is_needed = true })
	proxy.queries:append(2, packet)
	return proxy.PROXY_SEND_QUERY
end

function read_query_result(inj)
	if inj.id == 1 then
		for row in inj.resultset.rows do started = row[1] end -- per connection
		return proxy.PROXY_IGNORE_RESULT
	end
	local times = proxy.global.times or {}
	proxy.global.times = times
	times[#times + 1] = { inj.query:sub(2), started, inj.query_time, inj.response_time }
end
