-- A MySQL server played by a script: connect_server answers with a handshake of its own,
-- so no backend is ever contacted; every login is accepted and every query answered here.
local proto = require("mysql.proto")

function connect_server()
	proxy.global.mock_clients = (proxy.global.mock_clients or 0) + 1
	proxy.response = {
		type = proxy.MYSQLD_PACKET_RAW,
		packets = { proto.to_challenge_packet({ server_version = 50099, thread_id = 4242 }) },
	}
	return proxy.PROXY_SEND_RESULT
end

function read_query(packet)
	local cmd = packet:byte()
	if cmd == proxy.COM_QUIT then
		return
	end
	if cmd ~= proxy.COM_QUERY then
		-- COM_PING, COM_INIT_DB …: a plain OK
		proxy.response = { type = proxy.MYSQLD_PACKET_OK }
		return proxy.PROXY_SEND_RESULT
	end
	local sql = packet:sub(2)
	local verb = sql:lower():match("^%s*(%a+)")
	if verb == "set" then
		proxy.response = { type = proxy.MYSQLD_PACKET_OK }
	elseif verb == "insert" then
		proxy.response = { type = proxy.MYSQLD_PACKET_OK, affected_rows = 3, insert_id = 77 }
	elseif verb == "load" then
		-- LOAD DATA LOCAL INFILE 'file' …: ask the client for the file (the proxy takes it
		-- and answers OK when it ends)
		proxy.response = { type = proxy.MYSQLD_PACKET_RAW, packets = { "\251" .. sql:match("INFILE '([^']*)'") } }
	elseif verb == "fail" then
		proxy.response = {
			type = proxy.MYSQLD_PACKET_ERR, errmsg = "the mock refuses: " .. sql, errcode = 1234,
			sqlstate = "42000",
		}
	else
		proxy.response = {
			type = proxy.MYSQLD_PACKET_OK,
			resultset = {
				fields = {
					{ name = "query", type = proxy.MYSQL_TYPE_STRING },
					{ name = "user", type = proxy.MYSQL_TYPE_STRING },
					{ name = "clients", type = proxy.MYSQL_TYPE_LONG },
				},
				rows = { { sql, proxy.connection.client.username, proxy.global.mock_clients } },
			},
		}
	end
	return proxy.PROXY_SEND_RESULT
end
