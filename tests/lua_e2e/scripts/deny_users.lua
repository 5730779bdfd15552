-- Denying users in read_auth: a deny list, checked before anything reaches the server.
local chassis = require("chassis")

local DENIED = { native = true, intruder = true }

function read_auth()
	local c = proxy.connection.client
	if DENIED[c.username] then
		chassis.warning("denied user " .. c.username .. " from " .. c.src.address)
		proxy.response = {
			type = proxy.MYSQLD_PACKET_ERR,
			errmsg = "user '" .. c.username .. "' is not allowed through this proxy",
			errcode = 1045,
			sqlstate = "28000",
		}
		return proxy.PROXY_SEND_RESULT
	end
end
