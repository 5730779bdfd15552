-- The proxy.* objects part of the Lua bridge (objects.py is its Python half): the proxy.*
-- constants, proxy.global, proxy.connection with its client / server sockets,
-- proxy.queries and proxy.global.backends, and the per-connection keys behind proxy's
-- metatable.
--
-- bridge.lua runs this chunk with the `py` callbacks (already wrapped by limits.lua); it
-- sets _G.proxy. Every value that belongs to a connection is read from Python by
-- connection id (`cid`) when a script asks for it, so an object a script kept never dangles.
-- Returns the table `O` below.

local py = ...

local next, error = next, error
local type, tostring, tonumber = type, tostring, tonumber
local setmetatable, getmetatable, newproxy = setmetatable, getmetatable, newproxy
local floor, huge = math.floor, math.huge
local string_format = string.format

local py_log = py.log

local O = {}

---------------------------------------------------------------------------------------------
-- proxy.*: constants, proxy.global (shared) and the per-connection keys behind a metatable
---------------------------------------------------------------------------------------------

local C = {
	PROXY_SEND_QUERY = 1, PROXY_SEND_RESULT = 2, PROXY_IGNORE_RESULT = 4,
	MYSQLD_PACKET_OK = 0, MYSQLD_PACKET_ERR = 255, MYSQLD_PACKET_RAW = 250,
	BACKEND_STATE_UNKNOWN = 0, BACKEND_STATE_UP = 1, BACKEND_STATE_DOWN = 2,
	BACKEND_TYPE_UNKNOWN = 0, BACKEND_TYPE_RW = 1, BACKEND_TYPE_RO = 2,
	COM_SLEEP = 0, COM_QUIT = 1, COM_INIT_DB = 2, COM_QUERY = 3, COM_FIELD_LIST = 4,
	COM_CREATE_DB = 5, COM_DROP_DB = 6, COM_REFRESH = 7, COM_SHUTDOWN = 8,
	COM_STATISTICS = 9, COM_PROCESS_INFO = 10, COM_CONNECT = 11, COM_PROCESS_KILL = 12,
	COM_DEBUG = 13, COM_PING = 14, COM_TIME = 15, COM_DELAYED_INSERT = 16,
	COM_CHANGE_USER = 17, COM_BINLOG_DUMP = 18, COM_TABLE_DUMP = 19, COM_CONNECT_OUT = 20,
	COM_REGISTER_SLAVE = 21, COM_STMT_PREPARE = 22, COM_STMT_EXECUTE = 23,
	COM_STMT_SEND_LONG_DATA = 24, COM_STMT_CLOSE = 25, COM_STMT_RESET = 26,
	COM_SET_OPTION = 27, COM_STMT_FETCH = 28, COM_DAEMON = 29,
	MYSQL_TYPE_DECIMAL = 0, MYSQL_TYPE_TINY = 1, MYSQL_TYPE_SHORT = 2, MYSQL_TYPE_LONG = 3,
	MYSQL_TYPE_FLOAT = 4, MYSQL_TYPE_DOUBLE = 5, MYSQL_TYPE_NULL = 6,
	MYSQL_TYPE_TIMESTAMP = 7, MYSQL_TYPE_LONGLONG = 8, MYSQL_TYPE_INT24 = 9,
	MYSQL_TYPE_DATE = 10, MYSQL_TYPE_TIME = 11, MYSQL_TYPE_DATETIME = 12,
	MYSQL_TYPE_YEAR = 13, MYSQL_TYPE_NEWDATE = 14, MYSQL_TYPE_BIT = 16,
	MYSQL_TYPE_NEWDECIMAL = 246, MYSQL_TYPE_ENUM = 247, MYSQL_TYPE_SET = 248,
	MYSQL_TYPE_TINY_BLOB = 249, MYSQL_TYPE_MEDIUM_BLOB = 250, MYSQL_TYPE_LONG_BLOB = 251,
	MYSQL_TYPE_BLOB = 252, MYSQL_TYPE_VAR_STRING = 253, MYSQL_TYPE_STRING = 254,
	MYSQL_TYPE_GEOMETRY = 255,
	PROXY_VERSION = 0x000805,
}

local proxy = {}
for k, v in next, C do proxy[k] = v end
proxy.global = { config = {} }

-- proxy.foo reads and writes that are not constants or `global` go to the private table of
-- the connection whose hook is running (proxy.queries, .connection, .response, new keys).
local proxy_mt = {}
setmetatable(proxy, proxy_mt)
_G.proxy = proxy

local function activate(cs)
	proxy_mt.__index = cs.priv
	proxy_mt.__newindex = cs.priv
end

local function argerror(n, fname, expected, got)
	return string_format("bad argument #%d to '%s' (%s expected, got %s)", n, fname, expected, got)
end

local function to_integer(v)
	if type(v) == "string" then v = tonumber(v) end
	if type(v) ~= "number" or v ~= v or v == huge or v == -huge or floor(v) ~= v then return nil end
	return v
end

-- address objects (client.src, server.dst, backends[i].dst) are plain tables, made fresh
local function address(name, addr, port, family)
	if name == nil then return nil end
	return { name = name, address = addr, port = port, type = family }
end

---------------------------------------------------------------------------------------------
-- proxy.connection and its client / server socket objects
---------------------------------------------------------------------------------------------

local py_conn_get, py_conn_set = py.conn_get, py.conn_set
local py_peer_exists, py_peer_get, py_peer_addr = py.peer_exists, py.peer_get, py.peer_addr

local DEPRECATED_CONN = {
	default_db = "proxy.connection.default_db is deprecated, use proxy.connection.client.default_db or proxy.connection.server.default_db instead",
	thread_id = "proxy.connection.thread_id is deprecated, use proxy.connection.server.thread_id instead",
	mysqld_version = "proxy.connection.mysqld_version is deprecated, use proxy.connection.server.mysqld_version instead",
}

local function make_socket(cid, side)
	local u = newproxy(true)
	local mt = getmetatable(u)
	local label = "proxy.connection." .. side
	mt.__index = function(_, key)
		if key == "src" or key == "dst" then
			return address(py_peer_addr(cid, side, key))
		elseif key == "address" then
			error(label .. ".address is deprecated. Use .src.name or .dst.name", 2)
		end
		if type(key) ~= "string" then return nil end
		local value, known = py_peer_get(cid, side, key)
		if not known then
			py_log("critical", string_format("%s.%s is not known", label, key))
			return nil
		end
		return value
	end
	mt.__newindex = function(_, key)
		error(string_format("%s.%s is not writable", label, tostring(key)), 2)
	end
	mt.__tostring = function() return label end
	return u
end

local function make_connection(cid)
	local u = newproxy(true)
	local mt = getmetatable(u)
	mt.__index = function(_, key)
		if key == "backend_ndx" or key == "connection_close" then
			return py_conn_get(cid, key)
		elseif key == "client" or key == "server" then
			if not py_peer_exists(cid, key) then return nil end
			return make_socket(cid, key)
		end
		local msg = DEPRECATED_CONN[key]
		if msg then error(msg, 2) end
		return nil
	end
	mt.__newindex = function(_, key, value)
		if key == "backend_ndx" then
			local n = to_integer(value)
			if n == nil then error(argerror(3, "__newindex", "number", type(value)), 2) end
			local err = py_conn_set(cid, key, n)
			if err then error(err, 2) end
		elseif key == "connection_close" then
			if type(value) ~= "boolean" then
				error(argerror(3, "__newindex", "boolean", type(value)), 2)
			end
			py_conn_set(cid, key, value)
		else
			error(string_format("proxy.connection.%s is not writable", tostring(key)), 2)
		end
	end
	mt.__tostring = function() return "proxy.connection" end
	return u
end

---------------------------------------------------------------------------------------------
-- proxy.queries
---------------------------------------------------------------------------------------------

local py_queue_add, py_queue_reset, py_queue_len = py.queue_add, py.queue_reset, py.queue_len

local function make_queries(cid)
	local u = newproxy(true)
	local mt = getmetatable(u)
	local methods = {}
	local function add(where)
		local fname = where
		return function(self, id, packet, opts)
			if self ~= u then error(string_format("calling '%s' on bad self (use proxy.queries:%s())", fname, fname), 2) end
			local n = to_integer(id)
			if n == nil then
				error(argerror(1, fname, "integer", type(id) == "number" and "non-integer number" or type(id)), 2)
			end
			if type(packet) ~= "string" then error(argerror(2, fname, "string", type(packet)), 2) end
			local needed = false
			if opts ~= nil then
				if type(opts) ~= "table" then error(argerror(3, fname, "table", type(opts)), 2) end
				local r = opts.resultset_is_needed
				if r ~= nil then
					if type(r) ~= "boolean" then
						error(string_format("bad argument #3 to '%s' (:%s(..., { resultset_is_needed = boolean } ), is %s)",
							fname, fname, type(r)), 2)
					end
					needed = r
				end
			end
			py_queue_add(cid, where, n, packet, needed)
		end
	end
	methods.append = add("append")
	methods.prepend = add("prepend")
	methods.reset = function() py_queue_reset(cid) end
	methods.len = function() return py_queue_len(cid) end
	mt.__index = methods
	mt.__len = function() return py_queue_len(cid) end
	mt.__newindex = function(_, key) error(string_format("proxy.queries.%s is not writable", tostring(key)), 2) end
	mt.__tostring = function() return "proxy.queries" end
	return u
end

---------------------------------------------------------------------------------------------
-- proxy.global.backends (shared by every connection of this worker)
---------------------------------------------------------------------------------------------

local py_backend_count, py_backend_get, py_backend_set, py_backend_addr =
	py.backend_count, py.backend_get, py.backend_set, py.backend_addr
local py_pool_get, py_pool_set, py_pool_idle = py.pool_get, py.pool_set, py.pool_idle

local function make_pool(i)
	local users = newproxy(true)
	local umt = getmetatable(users)
	umt.__index = function(_, name)
		if type(name) ~= "string" then return nil end
		return { cur_idle_connections = py_pool_idle(i, name) }
	end
	umt.__newindex = function() error("proxy.global.backends[...].pool.users is not writable", 2) end

	local u = newproxy(true)
	local mt = getmetatable(u)
	mt.__index = function(_, key)
		if key == "users" then return users end
		if key == "min_idle_connections" or key == "max_idle_connections" then
			return py_pool_get(i, key)
		end
		return nil
	end
	mt.__newindex = function(_, key, value)
		if key == "min_idle_connections" or key == "max_idle_connections" then
			local n = to_integer(value)
			if n == nil or n < 0 then error(argerror(3, "__newindex", "non-negative integer", type(value)), 2) end
			py_pool_set(i, key, n)
		else
			error(string_format("proxy.global.backends[%d].pool.%s is not writable", i, tostring(key)), 2)
		end
	end
	return u
end

local function make_backend(i)
	local u = newproxy(true)
	local mt = getmetatable(u)
	mt.__index = function(_, key)
		if key == "dst" then return address(py_backend_addr(i)) end
		if key == "pool" then return make_pool(i) end
		if type(key) ~= "string" then return nil end
		return py_backend_get(i, key)
	end
	mt.__newindex = function(_, key, value)
		if key == "state" then
			local n = to_integer(value)
			if n == nil then error(argerror(3, "__newindex", "number", type(value)), 2) end
			local err = py_backend_set(i, key, n)
			if err then error(err, 2) end
		elseif key == "uuid" then
			if value ~= nil and type(value) ~= "string" then
				error(argerror(3, "__newindex", "string or nil", type(value)), 2)
			end
			py_backend_set(i, key, value)
		else
			error(string_format("proxy.global.backends[%d].%s is not writable", i, tostring(key)), 2)
		end
	end
	mt.__tostring = function() return string_format("proxy.global.backends[%d]", i) end
	return u
end

do
	local u = newproxy(true)
	local mt = getmetatable(u)
	mt.__len = function() return py_backend_count() end
	mt.__index = function(_, i)
		if type(i) ~= "number" or floor(i) ~= i or i < 1 or i > py_backend_count() then return nil end
		return make_backend(i)
	end
	mt.__newindex = function() error("proxy.global.backends is not writable", 2) end
	mt.__tostring = function() return "proxy.global.backends" end
	proxy.global.backends = u
end


---------------------------------------------------------------------------------------------
-- What bridge.lua uses
---------------------------------------------------------------------------------------------

-- proxy.queries and proxy.connection are made when a script first reads them (most of a
-- login's hooks never do, and each is a userdata with a dozen closures): until then the
-- private table holds the connection id under a key of its own for each, which a write of
-- proxy.queries / proxy.connection (whatever the value, nil too) drops, as it would have
-- replaced the object. proxy.response, the empty table MySQL Proxy gives each read_query
-- afresh, is made the same way (its pending key holds true): read_query renews it only
-- when the script read or wrote it since (fresh_response). A script sees what it saw in
-- MySQL Proxy (an empty table at each read_query, never one it kept, the same one until
-- replaced), and one that leaves proxy.response alone costs no table per command.
local rawget, rawset = rawget, rawset
local LAZY = { queries = {}, connection = {}, response = {} }  -- name -> the key of its pending cid
local MAKE = { queries = make_queries, connection = make_connection, response = function() return {} end }
local LAZY_QUERIES, LAZY_CONNECTION, LAZY_RESPONSE = LAZY.queries, LAZY.connection, LAZY.response

local private_mt = {
	__index = function(priv, key)
		local pending = LAZY[key]
		if pending == nil then return nil end
		local cid = rawget(priv, pending)
		if cid == nil then return nil end
		local object = MAKE[key](cid)
		rawset(priv, pending, nil)
		rawset(priv, key, object)
		return object
	end,
	__newindex = function(priv, key, value)
		-- (LuaJIT reaches here with a nil or NaN key: raise where Lua 5.1 would)
		if key == nil or key ~= key then error(key == nil and "table index is nil" or "table index is NaN", 2) end
		local pending = LAZY[key]
		if pending ~= nil then rawset(priv, pending, nil) end
		rawset(priv, key, value)
	end,
}

-- The private proxy.* keys of a new connection (see bridge.lua's open).
function O.new_private(cid)
	return setmetatable({ [LAZY_RESPONSE] = true, [LAZY_QUERIES] = cid, [LAZY_CONNECTION] = cid }, private_mt)
end

-- A fresh proxy.response for read_query, unless the last one is still pending (never read
-- nor written): bridge.lua calls this when priv[O.LAZY_RESPONSE] is nil.
function O.fresh_response(priv)
	rawset(priv, "response", nil)
	rawset(priv, LAZY_RESPONSE, true)
end
O.LAZY_RESPONSE = LAZY_RESPONSE

O.C, O.proxy, O.activate, O.argerror, O.to_integer = C, proxy, activate, argerror, to_integer
-- proxy's metatable, for bridge.lua's read_query entries, which do activate()'s work inline
O.proxy_mt = proxy_mt

return O
