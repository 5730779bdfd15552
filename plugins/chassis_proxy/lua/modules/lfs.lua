-- lfs: the shim of lfslib.py
local py, h = ...
local M = {
	_COPYRIGHT = "chassis",
	_DESCRIPTION = "the part of LuaFileSystem that MySQL Proxy scripts use",
	_VERSION = "LuaFileSystem 1.2 (chassis subset)",
}

local function checkstring(v, n, fname)
	if type(v) == "number" then return tostring(v) end
	if type(v) ~= "string" then error(h.argerror(n, fname, "string", type(v)), 3) end
	return v
end

function M.attributes(path, name)
	path = checkstring(path, 1, "attributes")
	if name ~= nil then name = checkstring(name, 2, "attributes") end
	local value, err = py.attributes(path, name)
	if value == nil and err then
		if name ~= nil and err:find("^invalid attribute name") then error(err, 2) end
		return nil, err
	end
	return value
end

-- LuaFileSystem's convention: the value on success, nil and a message on failure
local function result(value, err)
	if value == nil then return nil, err end
	return value
end

function M.currentdir()
	return result(py.currentdir())
end

function M.chdir(path)
	return result(py.chdir(checkstring(path, 1, "chdir")))
end

function M.mkdir(path)
	return result(py.mkdir(checkstring(path, 1, "mkdir")))
end

function M.rmdir(path)
	return result(py.rmdir(checkstring(path, 1, "rmdir")))
end

function M.touch(path, atime, mtime)
	path = checkstring(path, 1, "touch")
	if atime ~= nil and type(atime) ~= "number" then error(h.argerror(2, "touch", "number", type(atime)), 2) end
	if mtime ~= nil and type(mtime) ~= "number" then error(h.argerror(3, "touch", "number", type(mtime)), 2) end
	return result(py.touch(path, atime, mtime))
end

-- for name in lfs.dir(path) do ... end; errors (as LuaFileSystem does) if path cannot be read
function M.dir(path)
	path = checkstring(path, 1, "dir")
	local names, err = py.listdir(path)
	if names == nil then error(err, 2) end
	local i, closed = 0, false
	local obj = {}
	function obj:next()
		if closed then error("calling 'next' on a closed directory", 2) end
		i = i + 1
		return names[i]
	end
	function obj:close() closed = true end
	local function iter() return obj:next() end
	return iter, obj
end

return M
