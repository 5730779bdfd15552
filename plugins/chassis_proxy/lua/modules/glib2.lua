-- glib2: the shim of glib2lib.py
local py, h = ...
local M = {
	_COPYRIGHT = "chassis",
	_DESCRIPTION = "export glib2-functions as glib2.*",
	_VERSION = "LuaGlib2 0.1",
}

local function checkstring(v, n, fname)
	if type(v) == "number" then return tostring(v) end
	if type(v) ~= "string" then error(h.argerror(n, fname, "string", type(v)), 3) end
	return v
end

function M.md5(s)
	return py.md5(checkstring(s, 1, "md5"))
end

function M.get_current_time()
	return py.get_current_time()
end

function M.usleep(us)
	local n = h.to_integer(us)
	if n == nil then error(h.argerror(1, "usleep", "number", type(us)), 2) end
	local seconds = n / 1e6
	local deadline = h.deadline()
	if deadline then
		local left = deadline - h.clock()
		if seconds > left then
			py.sleep(left > 0 and left or 0)
			h.interrupt("timeout")
		end
	end
	py.sleep(seconds)
end

return M
