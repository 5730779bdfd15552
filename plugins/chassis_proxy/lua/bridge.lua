-- The Lua half of the chassis Lua bridge: the proxy.* objects MySQL Proxy 0.8 scripts use,
-- the per-connection environments, the hook dispatcher and the time and memory guards.
--
-- runtime.py runs this chunk once per Lua state with two arguments: a table of Python
-- callables (`py`) and a table of settings. It returns a table of functions that the
-- Python side calls (`api`). Nothing here touches sockets: every value that belongs to a
-- connection is read from Python through `py`, by connection id (`cid`), when a script
-- asks for it, so a connection object a script kept around never dangles.

local py, settings = ...

local raw_pcall, raw_xpcall = pcall, xpcall
local next, error = next, error

-- The allocator's memory ceiling (lupa's max_memory) is only armed while a hook's Lua code
-- runs. Outside it lupa allocates without protection (pushing arguments, building tables
-- for Python), and an allocation failure there would abort the process; so every Python
-- callback lifts the ceiling for its duration, and the hook's own allocations are the
-- only ones that can fail.
local py_arm, py_lift = py.memory_arm, py.memory_lift
local in_hook = false
local armed_by_caller = false  -- Python armed the ceiling before the call and lifts it after

local function relimit(ok, ...)
	py_arm()
	if not ok then error((...), 0) end
	return ...
end

local function unlimited(f)
	if not py_arm then return f end
	return function(...)
		if not in_hook then return f(...) end
		py_lift()
		return relimit(raw_pcall(f, ...))
	end
end

local function wrap_all(t)
	local w = {}
	for k, f in next, t do w[k] = unlimited(f) end
	return w
end

py = wrap_all(py)

local _G = _G
local type, tostring, tonumber, select, rawget, rawset = type, tostring, tonumber, select, rawget, rawset
local setmetatable, getmetatable, setfenv, loadstring, newproxy, unpack =
      setmetatable, getmetatable, setfenv, loadstring, newproxy, unpack
local floor, huge = math.floor, math.huge
local string_format, string_rep, string_sub, string_byte = string.format, string.rep, string.sub, string.byte
local table_concat = table.concat
local collectgarbage = collectgarbage
local debug_sethook, debug_getinfo = debug.sethook, debug.getinfo
local co_create, co_wrap, co_resume = coroutine.create, coroutine.wrap, coroutine.resume

local py_log = py.log

-- lupa's helper table is not part of MySQL Proxy's environment; scripts must not reach Python.
_G.python = nil
package.loaded.python = nil

local api = {}

---------------------------------------------------------------------------------------------
-- Limits: a wall-clock deadline per hook call and a memory ceiling.
--
-- LuaJIT never runs debug hooks inside compiled traces, so the JIT compiler is switched off
-- for the whole state: the count hook then fires every HOOK_COUNT VM instructions, also in
-- `while true do end`. An interrupted hook cannot swallow its interruption: pcall, xpcall
-- and coroutine.resume re-raise while a hook is being interrupted.
---------------------------------------------------------------------------------------------

if jit and jit.off then
	jit.off()
	jit.flush()
	-- a script turning the compiler back on would also turn the time limit off
	jit.on = function() end
end

local clock = os.clock
do
	local ok, ffi = raw_pcall(require, "ffi")
	if ok and type(ffi) == "table" then
		local defined = raw_pcall(ffi.cdef, [[
			typedef struct { long tv_sec; long tv_nsec; } chassis_bridge_timespec;
			int clock_gettime(int clk_id, chassis_bridge_timespec *tp);
		]])
		if defined then
			local ts = ffi.new("chassis_bridge_timespec")
			local C = ffi.C
			local ok_call = raw_pcall(C.clock_gettime, 1, ts)  -- 1: CLOCK_MONOTONIC on Linux
			if ok_call then
				clock = function()
					C.clock_gettime(1, ts)
					return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
				end
			end
		end
	end
end

local INTERRUPT = setmetatable({}, { __tostring = function() return "interrupted by chassis" end })
local OOM = "not enough memory"
local HOOK_COUNT = 10000

local hook_timeout = settings.hook_timeout or 0         -- seconds, 0 = no limit
local soft_memory_kb = settings.soft_memory_kb           -- set when the allocator cannot cap memory
local memory_limit = settings.max_memory or 0            -- bytes, 0 = no limit

-- The deadline is set lazily, on the first count-hook firing (or the first glib2.usleep) of a
-- hook call: a hook that finishes within HOOK_COUNT instructions never reads the clock, and
-- the few microseconds before the first firing do not matter against a limit in seconds.
local timed = false        -- a hook with a time limit is running
local deadline = nil       -- clock() value once known
local interrupted = nil    -- nil, "timeout" or "memory"

local function current_deadline()
	if timed and deadline == nil then deadline = clock() + hook_timeout end
	return deadline
end

local function limit_hook()
	if interrupted then error(INTERRUPT, 0) end
	if timed and clock() > current_deadline() then
		interrupted = "timeout"
		error(INTERRUPT, 0)
	end
	if soft_memory_kb and collectgarbage("count") > soft_memory_kb then
		collectgarbage("collect")
		if collectgarbage("count") > soft_memory_kb then
			interrupted = "memory"
			error(OOM, 0)
		end
	end
end

debug_sethook(limit_hook, "", HOOK_COUNT)

-- The time limit depends on this hook; a script may not replace it.
debug.sethook = function(...)
	local n = select("#", ...)
	if n == 0 then return end
	error("debug.sethook() is reserved by chassis (it enforces --lua-hook-timeout)", 2)
end

local function check_interrupt(ok, ...)
	if not ok then
		local err = (...)
		if interrupted or err == INTERRUPT then error(INTERRUPT, 0) end
		if err == OOM then
			interrupted = "memory"
			error(OOM, 0)
		end
	end
	return ok, ...
end

_G.pcall = function(f, ...)
	return check_interrupt(raw_pcall(f, ...))
end

-- Once a hook is being interrupted the script's error handler is not run: it could loop,
-- and PUC Lua 5.1 leaves hooks disabled while an error raised by a hook is handled.
_G.xpcall = function(f, handler, ...)
	local function guarded_handler(e)
		if interrupted or e == INTERRUPT or e == OOM then return e end
		return handler(e)
	end
	return check_interrupt(raw_xpcall(f, guarded_handler, ...))
end

coroutine.resume = function(co, ...)
	return check_interrupt(co_resume(co, ...))
end

-- PUC Lua 5.1 keeps hooks per coroutine (LuaJIT has one per VM): give every new one ours.
coroutine.create = function(f)
	local co = co_create(f)
	debug_sethook(co, limit_hook, "", HOOK_COUNT)
	return co
end

coroutine.wrap = function(f)
	local co = coroutine.create(f)
	return function(...)
		local function pass(ok, ...)
			if not ok then error((...), 0) end
			return ...
		end
		return pass(check_interrupt(co_resume(co, ...)))
	end
end

-- One call may ask for more memory than the whole limit; refuse it before allocating.
local function fits(bytes)
	if memory_limit <= 0 then return true end
	return bytes + collectgarbage("count") * 1024 <= memory_limit
end

string.rep = function(s, n, ...)
	if type(n) == "number" and type(s) == "string" and n > 0 and not fits(#s * n) then
		interrupted = "memory"
		error(OOM, 0)
	end
	return string_rep(s, n, ...)
end

function api.set_limits(timeout, max_memory, soft_kb)
	hook_timeout = timeout or 0
	memory_limit = max_memory or 0
	soft_memory_kb = soft_kb
end

-- Run `f(...)` under the limits; returns status, value.
--   0: returned (value = its first result when that is a number, else nil)
--   2: raised (value = the message), 3: timed out, 4: out of memory
local ST_OK, ST_MISSING, ST_ERROR, ST_TIMEOUT, ST_MEMORY = 0, 1, 2, 3, 4

local function describe(err)
	if type(err) == "string" then return err end
	local ok, s = raw_pcall(tostring, err)
	if ok and type(s) == "string" then return s end
	return "(error object is a " .. type(err) .. " value)"
end

local function finish(ok, ...)
	timed = false
	deadline = nil
	if in_hook then
		in_hook = false
		if py_lift and not armed_by_caller then py_lift() end
	end
	armed_by_caller = false
	local why = interrupted
	interrupted = nil
	if ok then
		local ret = (...)
		if type(ret) == "number" then return ST_OK, ret end
		return ST_OK, nil
	end
	local err = (...)
	if why == "memory" or (why == nil and err == OOM) then
		collectgarbage("collect")  -- give the memory back before Python touches the state again
		return ST_MEMORY, nil
	end
	if why == "timeout" or err == INTERRUPT then return ST_TIMEOUT, nil end
	return ST_ERROR, describe(err)
end

local function guarded(f, ...)
	interrupted = nil
	deadline = nil
	timed = hook_timeout > 0
	in_hook = true
	if py_arm then py_arm() end
	return finish(raw_pcall(f, ...))
end

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
-- Scripts: compiled once per file version, instantiated per connection
---------------------------------------------------------------------------------------------

-- Compile the file's text as the body of a function so each connection gets a fresh closure.
-- The chunk name is "@" .. path, so errors read "/path/x.lua:48: ..." (a long path loses its
-- start, not its file name); MySQL Proxy used the plain path: [string "/path/x.lua"]:48:
function api.compile(source, chunkname)
	if string_byte(source, 1) == 35 then  -- "#!" line: keep the line, drop its text
		local nl = source:find("\n", 1, true)
		source = nl and source:sub(nl) or ""
	end
	local factory, err = loadstring("return function(...) " .. source .. "\nend", chunkname)
	if not factory then return nil, err end
	return factory, nil
end

-- A connection's state: its env (falls back to _G) and its private proxy.* keys.
function api.new_connection(cid)
	local env = setmetatable({}, { __index = _G })
	local priv = {
		queries = make_queries(cid),
		connection = make_connection(cid),
		response = {},
	}
	return { env = env, priv = priv, cid = cid }
end

-- Run the script from the top in the connection's env (MySQL Proxy does this on the first
-- hook call of each connection).
function api.instantiate(cs, factory)
	activate(cs)
	local ok, fn = raw_pcall(factory)
	if not ok then return ST_ERROR, describe(fn) end
	setfenv(fn, cs.env)
	return guarded(fn)
end

function api.call_hook(cs, name, ...)
	activate(cs)
	local fn = cs.env[name]
	if fn == nil then return ST_MISSING, nil end
	return guarded(fn, ...)
end

function api.call_read_query(cs, packet)
	activate(cs)
	cs.priv.response = {}
	local fn = cs.env.read_query
	if fn == nil then return ST_MISSING, nil end
	return guarded(fn, packet)
end

-- The same, for a caller that armed the memory ceiling itself and lifts it after the call
-- (it checked there is room for the arguments): two Python callbacks fewer per command.
function api.call_read_query_armed(cs, packet)
	activate(cs)
	cs.priv.response = {}
	local fn = cs.env.read_query
	if fn == nil then return ST_MISSING, nil end
	interrupted = nil
	deadline = nil
	timed = hook_timeout > 0
	in_hook = true
	armed_by_caller = true
	return finish(raw_pcall(fn, packet))
end

function api.call_read_auth_result(cs, packet)
	activate(cs)
	local fn = cs.env.read_auth_result
	if fn == nil then return ST_MISSING, nil end
	return guarded(fn, { packet = packet })
end

function api.has_hook(cs, name)
	return cs.env[name] ~= nil
end

---------------------------------------------------------------------------------------------
-- proxy.response -> calls of the Python response builder (see response.py)
---------------------------------------------------------------------------------------------

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

local function build_response(cs)
	local resp = cs.priv.response
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
			py_resp_err("(lua) proxy.response.errmsg is nil", 1105, nil)
		else
			py_resp_err(errmsg, as_number(resp.errcode) or 1105, as_string(resp.sqlstate))
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

-- Returns nil on success or the reason the response cannot be sent.
function api.build_response(cs)
	activate(cs)
	local ok, err = raw_pcall(build_response, cs)
	if not ok then return "proxy.response could not be read: " .. describe(err) end
	return err
end

---------------------------------------------------------------------------------------------
-- The injection object of read_query_result(inj)
---------------------------------------------------------------------------------------------

local function not_buffered(what)
	error(string_format(".resultset.%s isn't available if 'resultset_is_needed ~= true'", what), 3)
end

local function make_fields(list)
	local u = newproxy(true)
	local mt = getmetatable(u)
	local n = #list
	mt.__len = function() return n end
	mt.__index = function(_, i)
		if type(i) ~= "number" then return nil end
		return rawget(list, i)
	end
	mt.__newindex = function() error(".resultset.fields is read-only", 2) end
	return u
end

-- r: a table made by injection.py (see ResultView.summary())
local function make_resultset(r, fields_fn, row_fn)
	local u = newproxy(true)
	local mt = getmetatable(u)
	local fields_cache
	mt.__index = function(_, key)
		if key == "query_status" or key == "affected_rows" or key == "insert_id"
			or key == "warning_count" or key == "row_count" or key == "bytes" then
			return r[key]
		elseif key == "flags" then
			return {
				in_trans = r.in_trans, auto_commit = r.auto_commit,
				no_good_index_used = r.no_good_index_used, no_index_used = r.no_index_used,
			}
		elseif key == "raw" then
			if not r.buffered then not_buffered("raw") end
			return r.raw
		elseif key == "fields" then
			if not r.buffered then not_buffered("fields") end
			if not fields_cache then fields_cache = make_fields(fields_fn()) end
			return fields_cache
		elseif key == "rows" then
			if not r.buffered then not_buffered("rows") end
			local i = 0
			return function()
				i = i + 1
				local row, err = row_fn(i)
				if err then error(err, 2) end
				return row
			end
		end
		return nil
	end
	mt.__newindex = function(_, key) error(string_format(".resultset.%s is read-only", tostring(key)), 2) end
	mt.__tostring = function() return "resultset" end
	return u
end

local function make_injection(r, fields_fn, row_fn)
	local u = newproxy(true)
	local mt = getmetatable(u)
	mt.__index = function(_, key)
		if key == "id" or key == "type" then return r.id
		elseif key == "query" then return r.query
		elseif key == "query_time" then return r.query_time
		elseif key == "response_time" then return r.response_time
		elseif key == "resultset" then return make_resultset(r, fields_fn, row_fn)
		end
		py_log("message", string_format("inj[%s] ... not found", tostring(key)))
		return nil
	end
	mt.__newindex = function(_, key) error(string_format("inj.%s is read-only", tostring(key)), 2) end
	mt.__tostring = function() return "injection" end
	return u
end

function api.call_read_query_result(cs, r, fields_fn, row_fn)
	activate(cs)
	local fn = cs.env.read_query_result
	if fn == nil then return ST_MISSING, nil end
	return guarded(fn, make_injection(r, unlimited(fields_fn), unlimited(row_fn)))
end

---------------------------------------------------------------------------------------------
-- print, and the modules scripts require
---------------------------------------------------------------------------------------------

local py_stdout = py.stdout_write

-- Lua's print writes to C stdio, which Python does not flush; route it through Python.
local function stdout_print(...)
	local n = select("#", ...)
	local parts = {}
	for i = 1, n do parts[i] = tostring((select(i, ...))) end
	py_stdout(table_concat(parts, "\t") .. "\n")
end
_G.print = stdout_print

-- "(source:line)" of the script line that called a chassis log function; the source is the
-- first stack frame that comes from a file, made relative to --basedir.
local basedir = settings.basedir
local function caller_position()
	local first_src, first_line
	for level = 3, 12 do
		local ar = debug_getinfo(level, "Sl")
		if not ar then break end
		local src = ar.source or ""
		if level == 3 then first_src, first_line = ar.short_src, ar.currentline end
		local c = string_sub(src, 1, 1)
		if c == "/" or c == "@" then
			if c == "@" then src = string_sub(src, 2) end
			if basedir and #basedir > 0 and string_sub(src, 1, #basedir) == basedir then
				src = string_sub(src, #basedir + 1)
				if string_sub(src, 1, 1) == "/" then src = string_sub(src, 2) end
			end
			return src, ar.currentline
		end
	end
	return first_src or "unknown", first_line or -1
end

local LOG_LEVELS = { error = true, critical = true, warning = true, message = true, info = true, debug = true }

-- chassis.log(level, msg) and friends; also what print() becomes once chassis is loaded
local function chassis_log(level, ...)
	local n = select("#", ...)
	local msg
	if n == 0 then msg = "nil" else
		local parts = {}
		for i = 1, n do parts[i] = tostring((select(i, ...))) end
		msg = table_concat(parts, "\t")
	end
	local src, line = caller_position()
	py_log(level, string_format("(%s:%d) %s", src, line or -1, msg))
end

local helpers = {
	argerror = argerror,
	to_integer = to_integer,
	fits = fits,
	log = function(level, ...)
		if not LOG_LEVELS[level] then
			error(string_format("bad argument #1 to 'log' (invalid option '%s')", tostring(level)), 3)
		end
		chassis_log(level, ...)
	end,
	deadline = current_deadline,
	clock = clock,
	interrupt = function(why) interrupted = why; error(why == "memory" and OOM or INTERRUPT, 0) end,
	remap_print = function(message_fn)
		if rawget(os, "print") == nil then rawset(os, "print", _G.print) end
		_G.print = message_fn
	end,
}

-- modules: { [name] = { source = <shim chunk>, py = <python functions>, global = <name> } }
function api.install_modules(modules)
	for name, m in next, modules do
		local shim, err = loadstring(m.source, "=" .. name)
		if not shim then error("cannot compile the shim of module " .. name .. ": " .. err) end
		local global = m.global
		local functions = wrap_all(m.py)
		package.preload[name] = function(...)
			local t = shim(functions, helpers, ...)
			if global then
				rawset(_G, global, t)
				package.loaded[global] = t
			end
			return t
		end
	end
end

function api.set_search_path(path, cpath)
	if path then package.path = path end
	if cpath then package.cpath = cpath end
end

function api.memory_kb()
	return collectgarbage("count")
end

function api.collect()
	collectgarbage("collect")
end

return api
