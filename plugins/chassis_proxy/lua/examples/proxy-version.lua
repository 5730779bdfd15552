--[[
proxy-version.lua: answer a query without asking any server.

  mysql> SELECT proxy_version();
  +-----------------+--------------+
  | proxy_version() | lua          |
  +-----------------+--------------+
  | 0.8.5           | Lua 5.1      |
  +-----------------+--------------+

Every other command is forwarded.
--]]

local function version_text(v)
	return string.format("%d.%d.%d", math.floor(v / 65536), math.floor(v / 256) % 256, v % 256)
end

function read_query(packet)
	if packet:byte() ~= proxy.COM_QUERY then return end
	local query = packet:sub(2):lower():gsub("^%s+", ""):gsub("[%s;]+$", "")
	if query ~= "select proxy_version()" then return end

	proxy.response = {
		type = proxy.MYSQLD_PACKET_OK,
		resultset = {
			fields = {
				{ name = "proxy_version()", type = proxy.MYSQL_TYPE_STRING },
				{ name = "lua", type = proxy.MYSQL_TYPE_STRING },
			},
			rows = { { version_text(proxy.PROXY_VERSION), jit and jit.version or _VERSION } },
		},
	}
	return proxy.PROXY_SEND_RESULT
end
