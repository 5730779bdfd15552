-- proxy.commands: split a client command packet (what read_query gets) into named fields.
--
--   local commands = require("proxy.commands")
--   local cmd = commands.parse(packet)
--   if cmd.type == proxy.COM_QUERY then print(cmd.query) end
--   print(commands.pretty_print(cmd))          -- "[COM_QUERY] SELECT 1"
--
-- Every command gets `type` (its COM_ byte) and `type_name` ("COM_QUERY"); the fields of
-- each command are listed in docs/lualib.md. MySQL Proxy 0.8.5 decoded only a few commands
-- and printed a debug line for the others; here every command of the protocol is decoded
-- and nothing is printed. A field that a truncated packet does not hold is nil.

local type, error, tostring = type, error, tostring
local byte, sub, find, format = string.byte, string.sub, string.find, string.format

local M = {
	_DESCRIPTION = "decode client command packets (chassis, MySQL Proxy 0.8 names)",
}

local NAMES = {
	[0] = "COM_SLEEP", "COM_QUIT", "COM_INIT_DB", "COM_QUERY", "COM_FIELD_LIST",
	"COM_CREATE_DB", "COM_DROP_DB", "COM_REFRESH", "COM_SHUTDOWN", "COM_STATISTICS",
	"COM_PROCESS_INFO", "COM_CONNECT", "COM_PROCESS_KILL", "COM_DEBUG", "COM_PING",
	"COM_TIME", "COM_DELAYED_INSERT", "COM_CHANGE_USER", "COM_BINLOG_DUMP", "COM_TABLE_DUMP",
	"COM_CONNECT_OUT", "COM_REGISTER_SLAVE", "COM_STMT_PREPARE", "COM_STMT_EXECUTE",
	"COM_STMT_SEND_LONG_DATA", "COM_STMT_CLOSE", "COM_STMT_RESET", "COM_SET_OPTION",
	"COM_STMT_FETCH", "COM_DAEMON", "COM_BINLOG_DUMP_GTID", "COM_RESET_CONNECTION",
	[250] = "COM_STMT_BULK_EXECUTE",  -- MariaDB
}
M.command_names = NAMES

--- "COM_QUERY" for 3; "COM_(0xNN)" for a byte that is no known command.
function M.type_name(t)
	return NAMES[t] or format("COM_(0x%02x)", t)
end

-- little-endian unsigned integer of `n` bytes at `pos` (nil when the packet is too short)
local function uint(s, pos, n)
	if #s < pos + n - 1 then return nil end
	local v = 0
	for i = pos + n - 1, pos, -1 do
		v = v * 256 + byte(s, i)
	end
	return v
end

-- NUL-terminated string at `pos`: text, position after the NUL (or after the end)
local function cstring(s, pos)
	if pos > #s then return nil, pos end
	local z = find(s, "\0", pos, true)
	if not z then return sub(s, pos), #s + 1 end
	return sub(s, pos, z - 1), z + 1
end

-- string prefixed with a one-byte length at `pos`: text, position after it
local function short_string(s, pos)
	local n = byte(s, pos)
	if not n then return nil, pos end
	return sub(s, pos + 1, pos + n), pos + 1 + n
end

local decoders = {}

local function rest_as(field)
	return function(cmd, p) cmd[field] = sub(p, 2) end
end

decoders[3] = rest_as("query")       -- COM_QUERY
decoders[22] = rest_as("query")      -- COM_STMT_PREPARE
decoders[2] = rest_as("schema")      -- COM_INIT_DB
decoders[5] = rest_as("schema")      -- COM_CREATE_DB
decoders[6] = rest_as("schema")      -- COM_DROP_DB

-- COM_FIELD_LIST: table NUL wildcard
decoders[4] = function(cmd, p)
	local pos
	cmd.table, pos = cstring(p, 2)
	cmd.table = cmd.table or ""
	cmd.wildcard = sub(p, pos)
end

-- COM_REFRESH: one byte of REFRESH_* flags
decoders[7] = function(cmd, p) cmd.flags = uint(p, 2, 1) end

-- COM_SHUTDOWN: optional shutdown level
decoders[8] = function(cmd, p) cmd.level = uint(p, 2, 1) end

-- COM_PROCESS_KILL: the connection (thread) id to kill
decoders[12] = function(cmd, p) cmd.thread_id = uint(p, 2, 4) end

-- COM_CHANGE_USER: user NUL, auth response (length byte + data), schema NUL,
-- [charset (2), auth plugin NUL, connect attributes]
decoders[17] = function(cmd, p)
	local pos
	cmd.username, pos = cstring(p, 2)
	cmd.response, pos = short_string(p, pos)
	cmd.schema, pos = cstring(p, pos)
	cmd.charset = uint(p, pos, 2)
	if cmd.charset then
		cmd.auth_plugin_name = (cstring(p, pos + 2))
	end
end

-- COM_BINLOG_DUMP: position (4), flags (2), server id (4), file name
decoders[18] = function(cmd, p)
	cmd.binlog_pos = uint(p, 2, 4)
	cmd.flags = uint(p, 6, 2)
	cmd.server_id = uint(p, 8, 4)
	if #p >= 11 then cmd.binlog_file = sub(p, 12) end
end

-- COM_TABLE_DUMP: schema and table, each with a one-byte length
decoders[19] = function(cmd, p)
	local pos
	cmd.schema, pos = short_string(p, 2)
	cmd.table = (short_string(p, pos))
end

-- COM_REGISTER_SLAVE: server id (4), host, user, password (one-byte lengths), port (2), ...
decoders[21] = function(cmd, p)
	cmd.server_id = uint(p, 2, 4)
	if cmd.server_id then
		local pos
		cmd.hostname, pos = short_string(p, 6)
		local _, after_user = short_string(p, pos)
		local _, after_password = short_string(p, after_user)
		cmd.port = uint(p, after_password, 2)
	end
end

-- statements: the id is at the same place for every COM_STMT_*
local function stmt_id(cmd, p) cmd.stmt_handler_id = uint(p, 2, 4) end

-- COM_STMT_EXECUTE: id (4), flags (1), iteration count (4), parameters
decoders[23] = function(cmd, p)
	stmt_id(cmd, p)
	cmd.flags = uint(p, 6, 1)
	cmd.iteration_count = uint(p, 7, 4)
end

-- COM_STMT_SEND_LONG_DATA: id (4), parameter number (2), data
decoders[24] = function(cmd, p)
	stmt_id(cmd, p)
	cmd.param_id = uint(p, 6, 2)
	if #p >= 7 then cmd.data = sub(p, 8) end
end

decoders[25] = stmt_id  -- COM_STMT_CLOSE
decoders[26] = stmt_id  -- COM_STMT_RESET

-- COM_SET_OPTION: 0 = multi statements on, 1 = off
decoders[27] = function(cmd, p) cmd.option = uint(p, 2, 2) end

-- COM_STMT_FETCH: id (4), number of rows (4)
decoders[28] = function(cmd, p)
	stmt_id(cmd, p)
	cmd.num_rows = uint(p, 6, 4)
end

decoders[250] = stmt_id  -- COM_STMT_BULK_EXECUTE

--- The command in `packet` (a read_query packet: COM_ byte first) as a table.
function M.parse(packet)
	if type(packet) ~= "string" then
		error(format("bad argument #1 to 'parse' (string expected, got %s)", type(packet)), 2)
	end
	if packet == "" then
		error("bad argument #1 to 'parse' (the packet is empty: a command packet starts with its COM_ byte)", 2)
	end
	local t = byte(packet)
	local cmd = { type = t, type_name = M.type_name(t) }
	local decode = decoders[t]
	if decode then decode(cmd, packet) end
	return cmd
end

-- what pretty_print shows after the name, by command
local SHOWN = {
	[3] = "query", [22] = "query",
	[2] = "schema", [5] = "schema", [6] = "schema",
	[4] = "table", [12] = "thread_id", [17] = "username", [18] = "binlog_file",
	[23] = "stmt_handler_id", [24] = "stmt_handler_id", [25] = "stmt_handler_id",
	[26] = "stmt_handler_id", [28] = "stmt_handler_id", [250] = "stmt_handler_id",
	[27] = "option", [7] = "flags", [21] = "server_id",
}

--- One line for a log: "[COM_QUERY] SELECT 1", "[COM_PING]", "[COM_STMT_EXECUTE] 1".
function M.pretty_print(cmd)
	local name = cmd.type_name or M.type_name(cmd.type)
	local field = SHOWN[cmd.type]
	if field and cmd[field] ~= nil then
		return format("[%s] %s", name, tostring(cmd[field]))
	end
	if field or NAMES[cmd.type] then
		return format("[%s]", name)
	end
	return format("[%s] ... no idea", name)
end

return M
