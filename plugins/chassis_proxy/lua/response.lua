-- The proxy.response part of the Lua bridge (response.py is its Python half): reads the
-- table a hook left in proxy.response with MySQL Proxy's rules (which types count as
-- numbers and strings, what becomes SQL NULL) and calls one resp_* callback per packet
-- part, from which response.py builds the payloads.
--
-- bridge.lua runs this chunk with the `py` callbacks and the proxy.* constants; it returns
-- build(resp): nil when every part was handed over, else why proxy.response cannot be sent.

local py, C = ...

local type, tostring, tonumber, rawget, unpack = type, tostring, tonumber, rawget, unpack
local floor = math.floor
local string_format = string.format

local py_log = py.log

local py_resp_ok, py_resp_err, py_resp_field, py_resp_row, py_resp_raw =
	py.resp_ok, py.resp_err, py.resp_field, py.resp_row, py.resp_raw

-- lua_isnumber(): numbers and strings that convert
local function as_number(v)
	if type(v) == "number" then return v end
	if type(v) == "string" then return tonumber(v) end
	return nil
end

-- lua_isstring(): strings and numbers (as tostring() shows them)
local function as_string(v)
	if type(v) == "string" then return v end
	if type(v) == "number" then return tostring(v) end
	return nil
end

local function build(resp)
	if resp == nil then return "proxy.response isn't set" end
	if type(resp) ~= "table" then return "proxy.response has to be a table, is a " .. type(resp) end
	local rtype = resp.type
	if rtype == nil then return "proxy.response.type isn't set" end
	local t = as_number(rtype)
	if t == nil then return "proxy.response.type has to be a number, is a " .. type(rtype) end
	t = floor(t)
	if t == C.MYSQLD_PACKET_OK then
		local rs = resp.resultset
		if type(rs) ~= "table" then
			py_resp_ok(as_number(resp.affected_rows) or 0, as_number(resp.insert_id) or 0)
			return nil
		end
		local fields = rs.fields
		if type(fields) ~= "table" then
			return "proxy.response.resultset.fields has to be a table, is a " .. type(fields)
		end
		local n = 0
		while true do
			local f = rawget(fields, n + 1)
			if f == nil then break end
			if type(f) ~= "table" then
				return string_format("proxy.response.resultset.fields[%d] should be a table, but is a %s", n + 1, type(f))
			end
			n = n + 1
			local name = as_string(f.name)
			if name == nil then
				py_log("warning", string_format("proxy.response.resultset.fields[%d].name is not a string (is %s), using 'no-field-name'", n, type(f.name)))
				name = "no-field-name"
			end
			local ftype = as_number(f.type)
			if ftype == nil then
				py_log("warning", string_format("proxy.response.resultset.fields[%d].type is not a number (is %s), using MYSQL_TYPE_STRING", n, type(f.type)))
				ftype = C.MYSQL_TYPE_STRING
			end
			py_resp_field(name, floor(ftype))
		end
		if n == 0 then
			return "proxy.response.resultset.fields is empty: a result set needs at least one field"
		end
		local rows = rs.rows
		if rows == nil then rows = {} end  -- no rows: an empty result set
		if type(rows) ~= "table" then
			return "proxy.response.resultset.rows has to be a table, is a " .. type(rows)
		end
		local cells = {}
		local i = 1
		while true do
			local row = rawget(rows, i)
			if row == nil then break end
			if type(row) ~= "table" then
				return string_format("proxy.response.resultset.rows[%d] should be a table, but is a %s", i, type(row))
			end
			for j = 1, n do cells[j] = as_string(rawget(row, j)) end  -- nil, booleans, tables: NULL
			py_resp_row(unpack(cells, 1, n))
			i = i + 1
		end
		return nil
	elseif t == C.MYSQLD_PACKET_ERR then
		local errmsg = as_string(resp.errmsg)
		if errmsg == nil then
			py_resp_err("(lua) proxy.response.errmsg is nil", nil, nil)
		else
			py_resp_err(errmsg, as_number(resp.errcode), as_string(resp.sqlstate))  -- nil: ER_UNKNOWN_ERROR
		end
		return nil
	elseif t == C.MYSQLD_PACKET_RAW then
		local packets = resp.packets
		if packets == nil then return "proxy.response.packets isn't set" end
		if type(packets) ~= "table" then return "proxy.response.packets has to be a table, is a " .. type(packets) end
		local i = 1
		while true do
			local p = rawget(packets, i)
			if p == nil then break end
			local s = as_string(p)
			if s == nil then
				return string_format("proxy.response.packets should be an array of strings, [%d] is a %s", i, type(p))
			end
			py_resp_raw(s)
			i = i + 1
		end
		return nil
	end
	return string_format("proxy.response.type is unknown: %s", tostring(rtype))
end

return build
