-- mysql.password: the shim of password.py
local py, h = ...
local M = {
	_COPYRIGHT = "chassis",
	_DESCRIPTION = "export mysql password encoders to mysql.*",
	_VERSION = "LuaMySQLPassword 0.1",
}

local function checkstring(v, n, fname)
	if type(v) == "number" then return tostring(v) end
	if type(v) ~= "string" then error(h.argerror(n, fname, "string", type(v)), 3) end
	return v
end

function M.hash(pw)
	return py.hash(checkstring(pw, 1, "hash"))
end

function M.scramble(challenge, hashed)
	return py.scramble(checkstring(challenge, 1, "scramble"), checkstring(hashed, 2, "scramble"))
end

function M.unscramble(challenge, response, dbl_hashed)
	return py.unscramble(checkstring(challenge, 1, "unscramble"), checkstring(response, 2, "unscramble"),
		checkstring(dbl_hashed, 3, "unscramble"))
end

function M.check(challenge, response, dbl_hashed)
	return py.check(checkstring(challenge, 1, "check"), checkstring(response, 2, "check"),
		checkstring(dbl_hashed, 3, "check"))
end

return M
