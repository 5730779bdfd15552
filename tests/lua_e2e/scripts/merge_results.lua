-- Merged result sets: "SELECT BOTH" runs two queries and answers with the rows of both,
-- under the column name of the first.
local Q = string.char(proxy.COM_QUERY)

function read_query(packet)
	if packet:sub(2) ~= "SELECT BOTH" then return end
	merged = { rows = {} } -- per connection
	proxy.queries:append(1, Q .. "SELECT seq AS n FROM test.seq_1_to_3", { resultset_is_needed = true })
	proxy.queries:append(2, Q .. "SELECT seq * 10 AS tens FROM test.seq_1_to_2", { resultset_is_needed = true })
	return proxy.PROXY_SEND_QUERY
end

function read_query_result(inj)
	local res = inj.resultset
	if res.query_status ~= proxy.MYSQLD_PACKET_OK then
		return -- the error goes to the client as it is
	end
	if inj.id == 1 then
		merged.fields = { { name = res.fields[1].name, type = res.fields[1].type } }
	end
	for row in res.rows do
		merged.rows[#merged.rows + 1] = { row[1] }
	end
	if inj.id == 1 then
		return proxy.PROXY_IGNORE_RESULT
	end
	proxy.response = {
		type = proxy.MYSQLD_PACKET_OK,
		resultset = { fields = merged.fields, rows = merged.rows },
	}
	return proxy.PROXY_SEND_RESULT
end
