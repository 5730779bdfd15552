-- mysql.proto: the shim of proto.py (reads the scripts' tables the way MySQL Proxy did)
local py, h = ...
local M = {
	_COPYRIGHT = "chassis",
	_DESCRIPTION = "export mysql protocol encoders and decoders mysql.*",
	_VERSION = "LuaMySQLProto 0.1",
}

local type, tostring, tonumber, error, floor = type, tostring, tonumber, error, math.floor

local function checkstring(v, n, fname)
	if type(v) == "number" then return tostring(v) end
	if type(v) ~= "string" then error(h.argerror(n, fname, "string", type(v)), 3) end
	return v
end

local function checktable(v, fname)
	if type(v) ~= "table" then error(h.argerror(1, fname, "table", type(v)), 3) end
	return v
end

local function checknumber(v, n, fname)
	local x = v
	if type(x) == "string" then x = tonumber(x) end
	if type(x) ~= "number" then error(h.argerror(n, fname, "number", type(v)), 3) end
	return floor(x)
end

-- LUA_IMPORT_INT: nil stays nil (the default applies), anything else as lua_tointeger()
local function int_field(t, key)
	local v = t[key]
	if v == nil then return nil end
	if type(v) == "string" then v = tonumber(v) end
	if type(v) ~= "number" then return 0 end
	return floor(v)
end

-- LUA_IMPORT_STR: nil stays nil, numbers become strings
local function str_field(t, key, fname)
	local v = t[key]
	if v == nil or type(v) == "string" then return v end
	if type(v) == "number" then return tostring(v) end
	error(string.format("%s: .%s has to be a string, is a %s", fname, key, type(v)), 3)
end

local function decoder(name)
	local f = py[name]
	M[name] = function(s, ...)
		s = checkstring(s, 1, name)
		local t, err = f(s, ...)
		if err then error(err, 2) end
		return t
	end
end

for _, name in ipairs({
	"from_err_packet", "from_ok_packet", "from_eof_packet", "from_challenge_packet",
	"from_masterinfo_string", "from_stmt_prepare_packet", "from_stmt_prepare_ok_packet",
	"stmt_id_from_stmt_execute_packet", "from_stmt_close_packet",
}) do decoder(name) end

function M.from_response_packet(s, server_caps)
	s = checkstring(s, 1, "from_response_packet")
	local t, err = py.from_response_packet(s, checknumber(server_caps, 2, "from_response_packet"))
	if err then error(err, 2) end
	return t
end

function M.from_stmt_execute_packet(s, num_params)
	s = checkstring(s, 1, "from_stmt_execute_packet")
	local t, err = py.from_stmt_execute_packet(s, checknumber(num_params, 2, "from_stmt_execute_packet"))
	if err then error(err, 2) end
	return t
end

local function encoded(s, err)
	if err then error(err, 3) end
	return s
end

function M.to_err_packet(t)
	checktable(t, "to_err_packet")
	return encoded(py.to_err_packet(str_field(t, "errmsg", "to_err_packet"),
		str_field(t, "sqlstate", "to_err_packet"), int_field(t, "errcode")))
end

function M.to_ok_packet(t)
	checktable(t, "to_ok_packet")
	return encoded(py.to_ok_packet(int_field(t, "server_status") or 0, int_field(t, "insert_id") or 0,
		int_field(t, "warnings") or 0, int_field(t, "affected_rows") or 0))
end

function M.to_eof_packet(t)
	checktable(t, "to_eof_packet")
	return encoded(py.to_eof_packet(int_field(t, "server_status") or 0, int_field(t, "warnings") or 0))
end

function M.to_challenge_packet(t)
	checktable(t, "to_challenge_packet")
	return encoded(py.to_challenge_packet(int_field(t, "server_version"), int_field(t, "thread_id"),
		int_field(t, "capabilities"), int_field(t, "charset"), int_field(t, "server_status"),
		str_field(t, "challenge", "to_challenge_packet")))
end

function M.to_response_packet(t)
	checktable(t, "to_response_packet")
	local sc = t.server_capabilities
	if sc == nil then
		-- the attached server's, as tutorial-scramble.lua expects (0.8.5 raised here)
		sc = h.server_capabilities()
		if sc == nil then
			error(".server_capabilities has to be set (no server is attached to take it from)", 2)
		end
	end
	if type(sc) == "string" then sc = tonumber(sc) end
	if type(sc) ~= "number" then error(".server_capabilities has to be a number", 2) end
	local f = "to_response_packet"
	return encoded(py.to_response_packet(floor(sc), int_field(t, "capabilities"),
		int_field(t, "max_packet_size"), int_field(t, "charset"), str_field(t, "username", f),
		str_field(t, "response", f), str_field(t, "auth_plugin_name", f), str_field(t, "database", f)))
end

local MASTERINFO = {
	{ "master_lines", "int" }, { "master_log_file", "str" }, { "master_log_pos", "int" },
	{ "master_host", "str" }, { "master_user", "str" }, { "master_password", "str" },
	{ "master_port", "int" }, { "master_connect_retry", "int" }, { "master_ssl", "int" },
	{ "master_ssl_ca", "str" }, { "master_ssl_capath", "str" }, { "master_ssl_cert", "str" },
	{ "master_ssl_cipher", "str" }, { "master_ssl_key", "str" },
	{ "master_ssl_verify_server_cert", "int" },
}

function M.to_masterinfo_string(t)
	checktable(t, "to_masterinfo_string")
	local values = {}
	for i, f in ipairs(MASTERINFO) do
		if f[2] == "int" then values[i] = int_field(t, f[1]) else values[i] = str_field(t, f[1], "to_masterinfo_string") end
	end
	return encoded(py.to_masterinfo_string(unpack(values, 1, #MASTERINFO)))
end

return M
