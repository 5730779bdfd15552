-- posix: the shim of posixlib.py
local py, h = ...
local M = {
	_COPYRIGHT = "chassis",
	_DESCRIPTION = "export posix-functions as posix.*",
	_VERSION = "LuaPosix 0.1",
}

local function checkint(v, n, fname)
	local i = h.to_integer(v)
	if i == nil then error(h.argerror(n, fname, "number", type(v)), 3) end
	return i
end

function M.getpid() return py.getpid() end
function M.getuid() return py.getuid() end

function M.getpwuid(uid)
	return py.getpwuid(checkint(uid, 1, "getpwuid"))
end

function M.kill(pid, sig)
	return py.kill(checkint(pid, 1, "kill"), checkint(sig, 2, "kill"))
end

return M
