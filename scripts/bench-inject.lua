-- A Lua run of scripts/bench (`scripts/bench --lua --also-lua scripts/bench-inject.lua`).
--
-- read_query sends every query (COM_QUERY, COM_STMT_EXECUTE) again as the script's own
-- injection, without resultset_is_needed, so its result streams to the client as it
-- comes: what query-timing scripts do (read_query_result then reads inj.query_time).
-- There is no read_query_result here: the figure is the cost of the injection itself.
function read_query(packet)
	local command = packet:byte()
	if command == proxy.COM_QUERY or command == proxy.COM_STMT_EXECUTE then
		proxy.queries:append(1, packet)
		return proxy.PROXY_SEND_QUERY
	end
end
