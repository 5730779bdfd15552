-- mysql.tokenizer: the shim of tokenizer.py
local py, h = ...
local M = {
	_COPYRIGHT = "chassis",
	_DESCRIPTION = "a simple tokenizer for mysql.*",
	_VERSION = "LuaMySQLTokenizer 0.1",
}

local names = py.names()
local newproxy, getmetatable, type, error, tostring = newproxy, getmetatable, type, error, tostring

local function make_token(id, text)
	local u = newproxy(true)
	local mt = getmetatable(u)
	mt.__index = function(_, key)
		if key == "text" then return text
		elseif key == "token_id" then return id
		elseif key == "token_name" then return names[id + 1]
		end
		error(string.format("token.%s does not exist (a token has text, token_id and token_name)", tostring(key)), 2)
	end
	mt.__newindex = function(_, key) error(string.format("token.%s is read-only", tostring(key)), 2) end
	mt.__tostring = function() return names[id + 1] .. " " .. text end
	return u
end

-- tokens[i] (1-based; nil out of range), #tokens; `tokens[i] = nil` frees a token
function M.tokenize(sql)
	if type(sql) == "number" then sql = tostring(sql) end
	if type(sql) ~= "string" then error(h.argerror(1, "tokenize", "string", type(sql)), 2) end
	local flat = py.tokenize(sql)
	local n = #flat / 2
	local cache = {}
	local freed = {}
	local u = newproxy(true)
	local mt = getmetatable(u)
	mt.__len = function() return n end
	mt.__index = function(_, i)
		if type(i) ~= "number" then
			error(h.argerror(2, "tokens[]", "number", type(i)), 2)
		end
		if i < 1 or i > n or i ~= math.floor(i) or freed[i] then return nil end
		local t = cache[i]
		if t == nil then
			t = make_token(flat[2 * i - 1], flat[2 * i])
			cache[i] = t
		end
		return t
	end
	mt.__newindex = function(_, i, v)
		if v ~= nil then error("tokens[] can only be set to nil (to free a token)", 2) end
		if type(i) == "number" then
			freed[i] = true
			cache[i] = nil
		end
	end
	mt.__tostring = function() return "tokens" end
	return u
end

return M
