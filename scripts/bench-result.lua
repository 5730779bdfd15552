-- A Lua run of scripts/bench (`scripts/bench --lua --also-lua scripts/bench-result.lua`).
--
-- read_query sends every query (COM_QUERY, COM_STMT_EXECUTE) as an injection whose result the script wants
-- to see (resultset_is_needed), and read_query_result reads the first field of the first
-- row and returns nothing, so the buffered result goes to the client: the cost of a
-- script that looks at results.
function read_query(packet)
	local command = packet:byte()
	if command == proxy.COM_QUERY or command == proxy.COM_STMT_EXECUTE then
		proxy.queries:append(1, packet, { resultset_is_needed = true })
		return proxy.PROXY_SEND_QUERY
	end
end

function read_query_result(inj)
	for row in inj.resultset.rows do
		local _ = row[1]
		break
	end
end
