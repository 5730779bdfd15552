-- chassis: the shim of chassislib.py (the log functions live in bridge.lua's helpers,
-- which know the script's source and line)
local py, h = ...
local M = {
	_COPYRIGHT = "chassis",
	_DESCRIPTION = "export chassis-functions as chassis.*",
	_VERSION = "LuaChassis 0.2",
}

function M.log(level, ...)
	if level == nil then level = "message" end
	if type(level) ~= "string" then error(h.argerror(1, "log", "string", type(level)), 2) end
	h.log(level, ...)
end

for _, level in ipairs({ "error", "critical", "warning", "message", "info", "debug" }) do
	M[level] = function(...) h.log(level, ...) end
end

function M.set_shutdown() py.set_shutdown() end

function M.get_stats(name)
	if name ~= nil and type(name) ~= "string" then
		error(h.argerror(1, "get_stats", "string", type(name)), 2)
	end
	return py.get_stats(name)
end

function M.mem_profile() end

h.remap_print(M.message)

return M
