-- Answering queries locally: a few statements about the proxy itself never reach a server.
local function answer(names, rows)
	local fields = {}
	for i, name in ipairs(names) do fields[i] = { name = name, type = proxy.MYSQL_TYPE_STRING } end
	proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = { fields = fields, rows = rows } }
	return proxy.PROXY_SEND_RESULT
end

local handlers = {}

handlers["SELECT PROXY_VERSION()"] = function()
	local v = proxy.PROXY_VERSION
	return answer({ "PROXY_VERSION()" },
		{ { string.format("%d.%d.%d", math.floor(v / 65536), math.floor(v / 256) % 256, v % 256) } })
end

handlers["SHOW PROXY BACKENDS"] = function()
	local rows = {}
	for i = 1, #proxy.global.backends do
		local b = proxy.global.backends[i]
		local state = ({ [proxy.BACKEND_STATE_UNKNOWN] = "unknown", [proxy.BACKEND_STATE_UP] = "up",
			[proxy.BACKEND_STATE_DOWN] = "down" })[b.state]
		local kind = b.type == proxy.BACKEND_TYPE_RW and "rw" or "ro"
		rows[i] = { i, b.dst.name, state, kind, b.connected_clients, b.uuid }
	end
	return answer({ "ndx", "address", "state", "type", "clients", "uuid" }, rows)
end

function read_query(packet)
	if packet:byte() ~= proxy.COM_QUERY then return end
	local sql = packet:sub(2)
	local handler = handlers[sql:upper()]
	if handler then return handler() end
	local uuid = sql:match("^PROXY SET UUID '([^']*)'$")
	if uuid then
		proxy.global.backends[1].uuid = uuid
		proxy.response = { type = proxy.MYSQLD_PACKET_OK, affected_rows = 1 }
		return proxy.PROXY_SEND_RESULT
	end
end
