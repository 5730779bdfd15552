-- The limits part of the Lua bridge (limits.py is its Python half): a wall-clock deadline
-- per hook call, a memory ceiling, and the guarded call that runs a hook under both and
-- turns how it ended into a status for the Python side.
--
-- bridge.lua runs this chunk first, with the raw `py` callbacks and the settings, before
-- any other part: it captures the real pcall/xpcall/coroutine functions and then replaces
-- them in _G. It returns the table `L` below (unlimited, wrap_all, guarded, guarded_armed,
-- fits, the statuses and the helpers the bundled modules use).

local py, settings = ...

local raw_pcall, raw_xpcall = pcall, xpcall
local next, error = next, error
local type, tostring, tonumber, select, ipairs = type, tostring, tonumber, select, ipairs
local setmetatable = setmetatable
local string_rep = string.rep
local collectgarbage = collectgarbage
local debug_sethook = debug.sethook
local co_create, co_resume = coroutine.create, coroutine.resume

local L = {}

---------------------------------------------------------------------------------------------
-- The memory ceiling around Python callbacks
--
-- The allocator's memory ceiling (lupa's max_memory) is only armed while a hook's Lua code
-- runs. Outside it lupa allocates without protection (pushing arguments, building tables
-- for Python), and an allocation failure there would abort the process; so every Python
-- callback lifts the ceiling for its duration, and the hook's own allocations are the
-- only ones that can fail.
---------------------------------------------------------------------------------------------

local py_arm, py_lift = py.memory_arm, py.memory_lift
local in_hook = false
local armed_by_caller = false  -- Python armed the ceiling before the call and lifts it after

local function relimit(ok, ...)
	py_arm()
	if not ok then error((...), 0) end
	return ...
end

-- f, wrapped so that it runs with the ceiling lifted when called from a hook
local function unlimited(f)
	if not py_arm then return f end
	return function(...)
		if not in_hook then return f(...) end
		py_lift()
		return relimit(raw_pcall(f, ...))
	end
end

-- a table of Python callables, each wrapped by unlimited() but those named in `plain`:
-- a callback that returns nothing (or only numbers and booleans) and never raises makes
-- Lua allocate nothing, so it may run under the ceiling (two Python calls fewer each time)
local function wrap_all(t, plain)
	local w = {}
	for k, f in next, t do
		if plain and plain[k] then w[k] = f else w[k] = unlimited(f) end
	end
	return w
end

L.unlimited, L.wrap_all = unlimited, wrap_all

---------------------------------------------------------------------------------------------
-- The deadline and the memory ceiling of a hook call
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

-- A wall clock: LuaJIT reads CLOCK_MONOTONIC through its FFI; PUC Lua asks Python (os.clock
-- is CPU time, which runs slow when the worker waits or shares a busy CPU).
local clock = py.clock or os.clock
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
local timeout_set = hook_timeout > 0                     -- what `timed` becomes in a hook
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
		local r = handler(e)  -- not a tail call: tracebacks would show "(tail call)" for it
		return r
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

function L.set_limits(timeout, max_memory, soft_kb)
	hook_timeout = timeout or 0
	timeout_set = hook_timeout > 0
	memory_limit = max_memory or 0
	soft_memory_kb = soft_kb
end

-- Run `f(...)` under the limits; returns status, value (the statuses of limits.py).
--   0: returned (value = its first result when that is a number, else nil)
--   1: no such hook (the callers' answer), 2: raised (value = the message), 3: timed out,
--   4: out of memory
local ST_OK, ST_MISSING, ST_ERROR, ST_TIMEOUT, ST_MEMORY = 0, 1, 2, 3, 4

-- the functions that call a hook (a traceback stops at them), filled in below
local runs_hook = {}

local function describe(err)
	if type(err) == "string" then return err end
	local ok, s = raw_pcall(tostring, err)
	if ok and type(s) == "string" then return s end
	return "(error object is a " .. type(err) .. " value)"
end

-- Garbage is collected before the ceiling is armed again: before a hook when the state is
-- within a MiB (or a quarter of the limit) of the ceiling, and after a hook that grew the
-- state by more than an eighth of the limit (or a MiB). Neither Lua 5.1 nor LuaJIT collects
-- when an allocation fails, so garbage left by one connection's big hook would otherwise
-- fail the next connection's hook on the memory limit.
local MiB = 1048576
local before_kb = 0  -- the state's size when the running hook started

local function collect_if_near()
	if memory_limit <= 0 then return end
	local headroom = memory_limit / 4
	if headroom > MiB then headroom = MiB end
	if collectgarbage("count") * 1024 > memory_limit - headroom then collectgarbage("collect") end
	before_kb = collectgarbage("count")
end

local function collect_if_big()
	if memory_limit <= 0 then return end
	local big = memory_limit / 8
	if big < MiB then big = MiB end
	if (collectgarbage("count") - before_kb) * 1024 > big then collectgarbage("collect") end
end

local function finish(ok, ...)
	timed = false
	deadline = nil
	if in_hook then
		in_hook = false
		if py_lift and not armed_by_caller then py_lift() end
	end
	-- (read_query's armed caller checks after lifting the ceiling itself)
	if not armed_by_caller then collect_if_big() end
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
	timed = timeout_set
	collect_if_near()
	in_hook = true
	if py_arm then py_arm() end
	return finish(raw_pcall(f, ...))
end

-- guarded(f, arg) for a caller that armed the memory ceiling itself and lifts it after the
-- call (host.py's read_query, when there is room for the packet): no Python callback here.
local function guarded_armed(f, arg)
	interrupted = nil
	deadline = nil
	timed = timeout_set
	in_hook = true
	armed_by_caller = true
	return finish(raw_pcall(f, arg))
end

-- guarded_armed for a hook called without arguments (the login hooks, the top level).
local function guarded_armed_bare(f)
	interrupted = nil
	deadline = nil
	timed = timeout_set
	in_hook = true
	armed_by_caller = true
	return finish(raw_pcall(f))
end

-- bridge.lua's read_query entries, made here so that they run the hook themselves: a Lua
-- call fewer per client command, finish's ending for a hook that returned inlined (no
-- varargs), and a short answer that Python unpacks for less: nothing when the hook returned
-- no number, the number it returned, or finish's (status, value) when it did not return
-- (or ST_MISSING). (Only the hook's first result counts, as in finish.) Before the call,
-- proxy.* is pointed at the connection's private keys (`proxy_mt`, objects.lua's activate)
-- and proxy.response renewed when the last one was touched (objects.lua's fresh_response,
-- when priv[lazy_response] is nil).
--   call_read_query_armed(cs, packet): for a caller that armed the memory ceiling itself
--     and lifts it after the call (guarded_armed's work)
--   call_read_query(cs, packet): through guarded (which arms and lifts the ceiling)
function L.read_query_entries(proxy_mt, lazy_response, fresh_response)
	local function call_read_query_armed(cs, packet)
		local priv = cs.priv
		proxy_mt.__index = priv
		proxy_mt.__newindex = priv
		if priv[lazy_response] == nil then fresh_response(priv) end
		local f = cs.env.read_query
		if f == nil then return ST_MISSING, nil end
		interrupted = nil
		deadline = nil
		timed = timeout_set
		in_hook = true
		armed_by_caller = true
		local ok, ret = raw_pcall(f, packet)
		if not ok then return finish(false, ret) end
		timed = false
		deadline = nil
		in_hook = false
		armed_by_caller = false
		interrupted = nil
		if ret ~= nil and type(ret) == "number" then return ret end
	end

	local function call_read_query(cs, packet)
		local priv = cs.priv
		proxy_mt.__index = priv
		proxy_mt.__newindex = priv
		if priv[lazy_response] == nil then fresh_response(priv) end
		local f = cs.env.read_query
		if f == nil then return ST_MISSING, nil end
		local status, value = guarded(f, packet)
		if status ~= ST_OK then return status, value end
		return value
	end

	runs_hook[call_read_query_armed] = true
	return call_read_query_armed, call_read_query
end

-- guarded_armed_bare answering as call_read_query_armed (above), for the login hooks.
local function run_armed_bare(f)
	interrupted = nil
	deadline = nil
	timed = timeout_set
	in_hook = true
	armed_by_caller = true
	local ok, ret = raw_pcall(f)
	if not ok then return finish(false, ret) end
	timed = false
	deadline = nil
	in_hook = false
	armed_by_caller = false
	interrupted = nil
	if ret ~= nil and type(ret) == "number" then return ret end
end

-- the functions that call a hook: a traceback stops at them
runs_hook[guarded], runs_hook[guarded_armed] = true, true
runs_hook[guarded_armed_bare], runs_hook[run_armed_bare] = true, true

---------------------------------------------------------------------------------------------
-- Tracebacks as MySQL Proxy 0.8.5 printed them
--
-- 0.8.5 called a hook straight from C: `debug.traceback()` in read_query showed the script's
-- frames and nothing under the hook. Here a hook runs under guarded() (called from Python),
-- and the bridge's wrappers (pcall, xpcall, the module functions) are Lua functions. The
-- traceback shown to scripts cuts the stack at the guarded call, drops the bridge's frames
-- and the C functions they call, and shows a bridge function called by a script as the C
-- function it stands for ("[C]: in function 'pcall'"). Lua 5.1's format, whatever the runtime.
---------------------------------------------------------------------------------------------

local debug_getinfo = debug.getinfo
local string_format = string.format
local table_concat = table.concat

-- the chunk names of the bridge's own code ("=limits.lua", "=mysql.proto" ...) and lupa's
local bridge_sources = { ["<python>"] = true, ["=[C]"] = false }

function L.bridge_source(chunkname)
	bridge_sources[chunkname] = true
end

local LEVELS1, LEVELS2 = 11, 10  -- Lua 5.1 shows the first 11 and the last 10 of a deep stack

local function frame_text(ar)
	local s = ar.short_src .. ":"
	if ar.currentline and ar.currentline > 0 then s = s .. ar.currentline .. ":" end
	if ar.namewhat and ar.namewhat ~= "" then
		return s .. " in function '" .. tostring(ar.name) .. "'"
	elseif ar.what == "main" then
		return s .. " in main chunk"
	elseif ar.what == "C" or ar.what == "tail" then
		return s .. " ?"
	end
	return s .. string_format(" in function <%s:%d>", ar.short_src, ar.linedefined)
end

-- (no tail calls: Lua 5.1 counts a "(tail call)" level for them, LuaJIT does not)
local function getinfo(co, level, what)
	local ar
	if co then ar = debug_getinfo(co, level, what) else ar = debug_getinfo(level, what) end
	return ar
end

-- the frames of `co` (nil: this thread) from `level` on that a script may see, as text
local function script_frames(co, level)
	local infos, bottom = {}, nil
	while true do
		local ar = getinfo(co, level, "Slnf")
		if not ar then break end
		if runs_hook[ar.func] then
			bottom = ar  -- the hook's caller: the bridge
			break
		end
		infos[#infos + 1] = ar
		level = level + 1
	end
	local lines = {}
	for i, ar in ipairs(infos) do
		local caller = infos[i + 1] or bottom
		local called_by_bridge = caller ~= nil and bridge_sources[caller.source] == true
		if bridge_sources[ar.source] == true then
			-- a bridge function called by a script stands for one of 0.8.5's C functions
			if not called_by_bridge and caller ~= nil and ar.namewhat ~= "" then
				lines[#lines + 1] = "[C]: in function '" .. tostring(ar.name) .. "'"
			end
		elseif not (ar.what == "C" and called_by_bridge) then
			lines[#lines + 1] = frame_text(ar)
		end
	end
	if #lines > LEVELS1 + LEVELS2 + 1 then
		local cut = {}
		for i = 1, LEVELS1 do cut[i] = lines[i] end
		cut[#cut + 1] = "..."
		for i = #lines - LEVELS2 + 1, #lines do cut[#cut + 1] = lines[i] end
		lines = cut
	end
	return lines
end

-- debug.traceback([thread,] [message [, level]]) with Lua 5.1's rules for the arguments
debug.traceback = function(...)
	local args, n = { ... }, select("#", ...)
	local co
	if type(args[1]) == "thread" then
		co = table.remove(args, 1)
		n = n - 1
	end
	local msg, level = args[1], args[2]
	if n >= 1 and type(msg) ~= "string" and type(msg) ~= "number" then return msg end
	if type(level) ~= "number" then level = co and 0 or 1 end
	-- frames counted from getinfo() below: getinfo, script_frames, this function, its caller
	if not co then level = level + 3 end
	local lines = script_frames(co, level)
	local head = (n >= 1 and msg ~= nil) and (tostring(msg) .. "\n") or ""
	if #lines == 0 then return head .. "stack traceback:" end
	return head .. "stack traceback:\n\t" .. table_concat(lines, "\n\t")
end

L.ST_OK, L.ST_MISSING, L.ST_ERROR, L.ST_TIMEOUT, L.ST_MEMORY = ST_OK, ST_MISSING, ST_ERROR, ST_TIMEOUT, ST_MEMORY
L.describe, L.guarded, L.guarded_armed = describe, guarded, guarded_armed
L.guarded_armed_bare = guarded_armed_bare
L.run_armed_bare = run_armed_bare
L.fits, L.clock, L.deadline = fits, clock, current_deadline

-- for the bundled modules (glib2.usleep): end the running hook as timed out or out of memory
function L.interrupt(why)
	interrupted = why
	error(why == "memory" and OOM or INTERRUPT, 0)
end

return L
