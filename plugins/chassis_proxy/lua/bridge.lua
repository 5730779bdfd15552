-- The Lua half of the chassis Lua bridge, its entry point: the per-connection environments
-- and the hook dispatcher (api.call_*), print and the chassis log functions, and the
-- installation of the modules scripts require. The rest lives in the parts next to it,
-- each the Lua half of the Python module of the same name:
--   limits.lua     the deadline and memory ceiling, and the guarded call of a hook
--   objects.lua    proxy.* constants, proxy.connection, proxy.queries, proxy.global.backends
--   response.lua   proxy.response read into resp_* callbacks
--   injection.lua  the inj object of read_query_result(inj)
--
-- runtime.py runs this chunk once per Lua state with three arguments: a table of Python
-- callables (`py`), a table of settings and the compiled parts (`part_chunks`, by name). It
-- returns a table of functions that the Python side calls (`api`). Nothing here touches
-- sockets: every value that belongs to a connection is read from Python through `py`.

local py, settings, part_chunks = ...

local raw_pcall = pcall  -- before limits.lua replaces _G.pcall
local next, error = next, error

local L  -- limits.lua's table, once it ran

local function part(name, ...)
	local chunk = part_chunks[name]
	if chunk == nil then error("the Lua bridge's part " .. name .. ".lua is missing") end
	if L then L.bridge_source("=" .. name .. ".lua") end
	return chunk(...)
end

-- limits.lua runs first: it wraps every Python callback so that it runs with the memory
-- ceiling lifted, and guards pcall, xpcall and coroutines before any script code exists.
L = part("limits", py, settings)
-- proxy.queries' callbacks run for most commands of a script that injects; they return
-- nothing or a number and never raise (objects.py guards them)
py = L.wrap_all(py, { queue_add = true, queue_reset = true, queue_len = true })
-- the bridge's frames are hidden from the tracebacks scripts see (limits.lua)
L.bridge_source("=limits.lua")
L.bridge_source("=bridge.lua")

local _G = _G
local type, tostring, tonumber, select, rawget, rawset = type, tostring, tonumber, select, rawget, rawset
local setmetatable, setfenv, loadstring = setmetatable, setfenv, loadstring
local string_format, string_sub, string_byte = string.format, string.sub, string.byte
local table_concat = table.concat
local collectgarbage = collectgarbage
local debug_getinfo = debug.getinfo

local py_log = py.log

-- lupa's helper table is not part of MySQL Proxy's environment; scripts must not reach Python.
_G.python = nil
package.loaded.python = nil

local guarded, guarded_armed, describe = L.guarded, L.guarded_armed, L.describe
local guarded_armed_bare = L.guarded_armed_bare
local ST_MISSING, ST_ERROR = L.ST_MISSING, L.ST_ERROR

local O = part("objects", py)
local activate, new_private, proxy_mt = O.activate, O.new_private, O.proxy_mt
local fresh_response, LAZY_RESPONSE = O.fresh_response, O.LAZY_RESPONSE
local run_armed_bare = L.run_armed_bare
local build_response = part("response", py, O.C)
local make_injection = part("injection", py)

local api = {}

api.set_limits = L.set_limits

---------------------------------------------------------------------------------------------
-- Scripts: compiled once per file version, instantiated per connection
---------------------------------------------------------------------------------------------

-- Compile the file's text as the body of a function so each connection gets a fresh closure.
-- The chunk name is the plain path, as MySQL Proxy 0.8.5 named it: errors and tracebacks
-- read [string "/path/x.lua"]:48: (Lua shortens a long one at its end; host.py names the
-- whole file again in the messages it logs).
function api.compile(source, chunkname)
	if string_byte(source, 1) == 35 then  -- "#!" line: keep the line, drop its text
		local nl = source:find("\n", 1, true)
		source = nl and source:sub(nl) or ""
	end
	local factory, err = loadstring("return function(...) " .. source .. "\nend", chunkname)
	if not factory then return nil, err end
	return factory, nil
end

---------------------------------------------------------------------------------------------
-- Which hooks a script may define
--
-- MySQL Proxy looks a hook up at each call, so a script may define one at any time: in its
-- connection's env (a global assignment in a hook) or in _G, which the env falls back to.
-- Python skips the call of a hook whose name it knows absent (instance.py), and learns of
-- a name written into an env or _G from the tables' __newindex, which Lua calls only for a
-- key the table does not hold: an ordinary global write costs nothing after the first.
-- py.hook_defined(cid, name) tells it (cid 0: _G); the names the top level defined in its
-- own env are read off the env after it ran (open's fourth value). A name once written
-- stays "may be defined": a hook set to nil again is found missing by the call, as before.
--
-- The builtins that write a table raw or reach its metatable are wrapped: rawset of a
-- tracked name into an env or _G tells Python first; getmetatable, setmetatable and their
-- debug.* twins, given an env or _G, end that table's tracking for good (Python then calls
-- each hook of it) and first take the __newindex out, so the script sees the metatable
-- MySQL Proxy gave it (none on _G, an env's own { __index = _G }). Their errors read as the
-- builtins' own. Only C code that writes an env or _G raw goes unseen.
---------------------------------------------------------------------------------------------

local raw_rawset, raw_rawget = rawset, rawget
local raw_getmetatable, raw_setmetatable = getmetatable, setmetatable
local metatable_of = debug.getmetatable  -- not __metatable's stand-in
local py_hook_defined = py.hook_defined
local tracked_names = {}  -- the hook names Python asks about (api.track_hooks), in order
local is_tracked = {}
local tracked_cid = setmetatable({}, { __mode = "k" })  -- env -> its cid; _G -> 0
local instantiating = nil  -- the env whose script top level is running

-- __newindex of the envs and _G. Python hears first: a hook interrupted between the two
-- leaves a name marked that is not there, never the reverse.
local function track(t, k, v)
	if k == nil or k ~= k then error(k == nil and "table index is nil" or "table index is NaN", 2) end
	if v ~= nil and is_tracked[k] and t ~= instantiating then
		local cid = tracked_cid[t]
		if cid ~= nil then py_hook_defined(cid, k) end
	end
	raw_rawset(t, k, v)
end

local G_mt = { __newindex = track }
local env_mt = { __index = _G, __newindex = track }  -- shared by the envs still tracked

-- The end of `t`'s tracking (a builtin reached its metatable): MySQL Proxy's metatable back.
local function untrack(t)
	local cid = tracked_cid[t]
	tracked_cid[t] = nil
	py_hook_defined(cid, nil)
	local mt = metatable_of(t)
	if t == _G then
		if mt == G_mt then raw_setmetatable(_G, nil) end
	elseif mt == env_mt then
		raw_setmetatable(t, { __index = _G })  -- its own, as each env had in MySQL Proxy
	end
end

-- A wrapped builtin's failure, raised as the builtin raises it: "bad argument #n to 'name'"
-- with the name its caller used, at the caller's line (level 1 here is the wrapper).
local function builtin_error(raw, ...)
	local _, err = raw_pcall(raw, ...)
	if type(err) == "string" then
		local n, why = err:match("^bad argument #(%d+) to '[^']*' %((.*)%)$")
		if n then
			local ar = debug_getinfo(2, "n")
			local name = ar and ar.name or "?"
			n = tonumber(n)
			if ar and ar.namewhat == "method" then
				n = n - 1
				if n == 0 then error(string_format("calling '%s' on bad self (%s)", name, why), 3) end
			end
			err = string_format("bad argument #%d to '%s' (%s)", n, name, why)
		end
	end
	error(err, 3)
end

local function rawset_tracked(...)
	local t, k, v = ...
	if type(t) ~= "table" or (v == nil and select("#", ...) < 3) then builtin_error(raw_rawset, ...) end
	if v ~= nil and is_tracked[k] then
		local cid = tracked_cid[t]
		if cid ~= nil then py_hook_defined(cid, k) end
	end
	return raw_rawset(t, k, v)
end

local function wrap_getmetatable(raw)
	return function(...)
		local t = ...
		if t == nil then
			if select("#", ...) == 0 then builtin_error(raw) end
		elseif tracked_cid[t] ~= nil then
			untrack(t)
		end
		return raw(t)
	end
end

local function setmetatable_tracked(...)
	local t, mt = ...
	if type(t) ~= "table" or (mt ~= nil and type(mt) ~= "table") or (mt == nil and select("#", ...) < 2) then
		builtin_error(raw_setmetatable, ...)
	end
	local old = metatable_of(t)
	if old ~= nil and raw_rawget(old, "__metatable") ~= nil then builtin_error(raw_setmetatable, ...) end
	if tracked_cid[t] ~= nil then untrack(t) end
	return raw_setmetatable(t, mt)
end

local raw_debug_setmetatable = debug.setmetatable
local function debug_setmetatable_tracked(...)
	local t, mt = ...
	if (mt ~= nil and type(mt) ~= "table") or (mt == nil and select("#", ...) < 2) then
		builtin_error(raw_debug_setmetatable, ...)
	end
	if tracked_cid[t] ~= nil then untrack(t) end
	return raw_debug_setmetatable(t, mt)
end

-- The hook names to track, in the order of open's bit mask (calls.py's TRACKED_HOOKS).
function api.track_hooks(names)
	for i = 1, #names do
		tracked_names[i] = names[i]
		is_tracked[names[i]] = true
	end
end

-- A connection's state (its env, falling back to _G, and its private proxy.* keys), with
-- the script run from the top in the env (MySQL Proxy does this on the first hook call of
-- each connection): the state, limits.lua's (status, value) and, as bits in the order of
-- api.track_hooks, the tracked hooks the top level left in the env. `armed`: the caller
-- armed the memory ceiling and lifts it after the call (as call_read_query_armed).
function api.open(cid, factory, armed)
	local env = raw_setmetatable({}, env_mt)
	tracked_cid[env] = cid
	local cs = { env = env, priv = new_private(cid), cid = cid }
	activate(cs)
	local ok, fn = raw_pcall(factory)
	if not ok then return cs, ST_ERROR, describe(fn), 0 end
	setfenv(fn, env)
	instantiating = env
	local status, value
	if armed then status, value = guarded_armed_bare(fn) else status, value = guarded(fn) end
	instantiating = nil
	local defined, bit = 0, 1
	for i = 1, #tracked_names do
		if raw_rawget(env, tracked_names[i]) ~= nil then defined = defined + bit end
		bit = bit * 2
	end
	return cs, status, value, defined
end

---------------------------------------------------------------------------------------------
-- The hook dispatcher: each call_* returns limits.lua's (status, value)
---------------------------------------------------------------------------------------------

function api.call_hook(cs, name, ...)
	activate(cs)
	local fn = cs.env[name]
	if fn == nil then return ST_MISSING, nil end
	return guarded(fn, ...)
end

-- The same, for a caller that armed the memory ceiling itself, answering in short as
-- call_read_query_armed does (nothing, a number, or status and value).
function api.call_hook_armed(cs, name)
	local priv = cs.priv  -- activate(cs), inlined
	proxy_mt.__index = priv
	proxy_mt.__newindex = priv
	local fn = cs.env[name]
	if fn == nil then return ST_MISSING, nil end
	return run_armed_bare(fn)
end

-- read_query runs for every client command: its entries do activate()'s work inline, give
-- it a fresh proxy.response (objects.lua's fresh_response: only when the last one was
-- touched) and run it themselves, made by limits.lua. They answer in short: nothing, the
-- number the hook returned, or (status, value).
--   call_read_query(cs, packet): limits.lua arms the memory ceiling after the arguments
--   call_read_query_armed(cs, packet): for a caller that armed the ceiling itself and lifts
--     it after the call (it checked there is room for the arguments): two Python callbacks
--     fewer per command
api.call_read_query_armed, api.call_read_query = L.read_query_entries(proxy_mt, LAZY_RESPONSE, fresh_response)

function api.call_read_auth_result(cs, packet)
	activate(cs)
	local fn = cs.env.read_auth_result
	if fn == nil then return ST_MISSING, nil end
	return guarded(fn, { packet = packet })
end

-- After the state: injection.py's ResultView.arguments()
function api.call_read_query_result(cs, ...)
	activate(cs)
	local fn = cs.env.read_query_result
	if fn == nil then return ST_MISSING, nil end
	return guarded(fn, make_injection(...))
end

-- The same, for a caller that armed the memory ceiling itself (as call_read_query_armed).
function api.call_read_query_result_armed(cs, ...)
	activate(cs)
	local fn = cs.env.read_query_result
	if fn == nil then return ST_MISSING, nil end
	return guarded_armed(fn, make_injection(...))
end

function api.has_hook(cs, name)
	return cs.env[name] ~= nil
end

-- Returns nil on success or the reason the response cannot be sent.
function api.build_response(cs)
	activate(cs)
	local ok, err = raw_pcall(build_response, cs.priv.response)
	if not ok then return "proxy.response could not be read: " .. describe(err) end
	return err
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
	-- concatenated: Lua 5.1's string.format("%s") stops at a NUL byte of the message
	py_log(level, "(" .. src .. ":" .. string_format("%d", line or -1) .. ") " .. msg)
end

local helpers = {
	argerror = O.argerror,
	to_integer = O.to_integer,
	fits = L.fits,
	log = function(level, ...)
		if not LOG_LEVELS[level] then
			error(string_format("bad argument #1 to 'log' (invalid option '%s')", tostring(level)), 3)
		end
		chassis_log(level, ...)
	end,
	server_capabilities = py.server_capabilities,
	deadline = L.deadline,
	clock = L.clock,
	interrupt = L.interrupt,
	remap_print = function(message_fn)
		if rawget(os, "print") == nil then rawset(os, "print", _G.print) end
		_G.print = message_fn
	end,
}

-- The searchers, in order: package.preload (MySQL Proxy's modules, built in), the Lua path
-- (--lua-path first, then chassis' proxy.* library), the bundled library from memory, the C
-- path (--lua-cpath) and its all-in-one searcher, then the fallback modules (lfs: the real
-- LuaFileSystem on the C path wins over our subset).
local loaders = package.loaders or package.searchers
local fallbacks = {}
loaders[#loaders + 1] = function(name)
	local load = fallbacks[name]
	if not load then return "\n\tno module '" .. name .. "' built into chassis" end
	return load
end

-- The file a C searcher would open for `name` (package.searchpath is Lua 5.2).
local io_open = io.open
local function find_c_module(name)
	local file = name:gsub("%.", "/")
	for template in package.cpath:gmatch("[^;]+") do
		local path = template:gsub("%?", file)
		local f = io_open(path, "rb")
		if f then f:close() return path end
	end
	return nil
end

-- C modules bind to the Lua C API of one runtime per process (runtime.py): in a state of
-- the other, a module found on the C path is refused with the reason instead of crashing.
-- A module that fails to load gives one line: "error loading module 'x' from file 'f': why"
-- (Lua 5.1 puts the reason on a line of its own).
local c_refused = settings.c_modules_refused
local c_index = #loaders - 2  -- the C searcher, then the all-in-one searcher, then ours
local function one_line(ok, ...)
	if ok then return ... end
	local err = (...)
	if type(err) == "string" then err = err:gsub(":\n\t", ": ") end
	error(err, 0)
end
for i = c_index, c_index + 1 do
	local search = loaders[i]
	loaders[i] = function(name)
		if c_refused then
			local path = find_c_module(name)
			if not path then return "\n\tno C module '" .. name .. "' on package.cpath" end
			error(string_format("error loading module '%s' from file '%s': %s", name, path, c_refused), 0)
		end
		return one_line(raw_pcall(search, name))
	end
end

-- modules: { [name] = { source = <shim chunk>, py = <python functions>, global = <name>,
-- fallback = <found after every path> } }
function api.install_modules(modules)
	for name, m in next, modules do
		L.bridge_source("=" .. name)
		local shim, err = loadstring(m.source, "=" .. name)
		if not shim then error("cannot compile the shim of module " .. name .. ": " .. err) end
		local global = m.global
		local functions = L.wrap_all(m.py)
		local load = function(...)
			local t = shim(functions, helpers, ...)
			if global then
				rawset(_G, global, t)
				package.loaded[global] = t
			end
			return t
		end
		if m.fallback then fallbacks[name] = load else package.preload[name] = load end
	end
end

function api.set_search_path(path, cpath)
	if path then package.path = path end
	if cpath then package.cpath = cpath end
end

-- The bundled proxy.* library, read at start-up: a searcher after Lua's own path searcher,
-- so the files on package.path (the user's first, then ours) still win, and a module whose
-- file can no longer be read (the worker dropped privileges with --user) is served from
-- memory.
function api.set_bundled_library(modules)
	table.insert(loaders, 3, function(name)
		local m = modules[name]
		if not m then return "\n\tno module '" .. name .. "' bundled with chassis" end
		local chunk, err = loadstring(m[1], m[2])
		if not chunk then error(err, 2) end
		return chunk
	end)
end

-- The tracking starts once the bridge has set its globals.
tracked_cid[_G] = 0
raw_setmetatable(_G, G_mt)
_G.rawset, _G.setmetatable = rawset_tracked, setmetatable_tracked
_G.getmetatable = wrap_getmetatable(raw_getmetatable)
debug.getmetatable = wrap_getmetatable(debug.getmetatable)
debug.setmetatable = debug_setmetatable_tracked

function api.memory_kb()
	return collectgarbage("count")
end

function api.collect()
	collectgarbage("collect")
end

return api
