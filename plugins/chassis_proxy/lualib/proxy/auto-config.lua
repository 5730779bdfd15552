-- proxy.auto-config: change a script's settings in proxy.global.config with SQL-like commands.
--
--   local auto_config = require("proxy.auto-config")
--   proxy.global.config.rwsplit = proxy.global.config.rwsplit or { max_idle_connections = 8, is_debug = false }
--   function read_query(packet)
--     if packet:byte() == proxy.COM_QUERY then
--       local r = proxy.global.config:handle({ type = proxy.COM_QUERY, query = packet:sub(2) })
--       if r then return r end
--     end
--   end
--
-- Answered from proxy.response (the handler returns proxy.PROXY_SEND_RESULT; nil when the
-- query is not one of these):
--   PROXY SHOW CONFIG                           rows module, option, value, type
--   PROXY SET GLOBAL <module>.<option> = <value>  "string" or 'string', a number, true/false
--   PROXY SAVE CONFIG INTO "<file>"             writes a Lua file that LOAD reads back
--   PROXY LOAD CONFIG FROM "<file>"             merges such a file into the config
-- Keywords are case-insensitive; a value must have the type the option has now.
--
-- Better than MySQL Proxy 0.8.5 (see docs/lualib.md): booleans can be set to true, an
-- option whose value is false is found, names may contain "_" (so
-- rwsplit.max_idle_connections can be set), quotes are not kept in strings and file names,
-- numbers may have decimals, a malformed PROXY command gets an ERR with the syntax instead
-- of being sent to the server, the saved file is closed and sorted, and a loaded file runs
-- without access to any global (it can only return a table).
--
-- Any client that can send queries through the proxy can use these commands, SAVE writes
-- whatever file the proxy's user may write: use the module only where clients are trusted.

local type, tostring, tonumber, pairs, ipairs, pcall, setfenv, loadfile =
	type, tostring, tonumber, pairs, ipairs, pcall, setfenv, loadfile
local format, lower, match, sub, gsub = string.format, string.lower, string.match, string.sub, string.gsub
local sort, concat = table.sort, table.concat
local open = io.open

local M = {
	_DESCRIPTION = "PROXY SHOW/SET/SAVE/LOAD CONFIG over proxy.global.config (chassis, MySQL Proxy 0.8 names)",
}

local USAGE = "PROXY SHOW CONFIG | PROXY SET GLOBAL <module>.<option> = <value> | "
	.. "PROXY SAVE CONFIG INTO \"<file>\" | PROXY LOAD CONFIG FROM \"<file>\""

-- `s` starts with the keyword `word` (any case) followed by whitespace or the end:
-- the rest after the whitespace, else nil
local function keyword(s, word)
	if s == nil or lower(sub(s, 1, #word)) ~= lower(word) then return nil end
	local rest = sub(s, #word + 1)
	if rest == "" then return rest end
	local after = match(rest, "^%s+(.*)$")
	return after
end

-- '"text"' or "'text'" with \x escapes or a doubled quote: the text, else nil
local function quoted(s)
	local q = sub(s, 1, 1)
	if (q ~= '"' and q ~= "'") or #s < 2 or sub(s, -1) ~= q then return nil end
	local body = gsub(sub(s, 2, -2), q .. q, "\\" .. q)
	-- an unescaped quote of the same kind inside means this is not one string
	local stripped = gsub(body, "\\.", "")
	if stripped:find(q, 1, true) then return nil end
	return (gsub(body, "\\(.)", "%1"))
end

-- the value of PROXY SET GLOBAL as (type, value), or nil
local function literal(s)
	local text = quoted(s)
	if text then return "string", text end
	if match(s, "^%-?%d+$") or match(s, "^%-?%d*%.%d+$") or match(s, "^%-?%d+%.%d*$") then
		return "number", tonumber(s)
	end
	local l = lower(s)
	if l == "true" then return "boolean", true end
	if l == "false" then return "boolean", false end
	return nil
end

local NAME = "[%a_][%w_%-]*"

--- The parsed command: { "SHOW" } | { "SET", module, option, type, value } |
-- { "SAVE", file } | { "LOAD", file }; nil when `query` is not a PROXY config command;
-- false, message when it is one but malformed.
function M.parse(query)
	local s = match(query, "^%s*(.-)[%s;]*$")
	local rest = keyword(s, "PROXY")
	if not rest then return nil end
	local r = keyword(rest, "SHOW")
	if r then
		if not keyword(r, "CONFIG") then return nil end
		if keyword(r, "CONFIG") ~= "" then return false, "PROXY SHOW CONFIG takes no arguments" end
		return { "SHOW" }
	end
	r = keyword(rest, "SET")
	if r then
		r = keyword(r, "GLOBAL")
		if not r then return nil end
		local module, option, value = match(r, "^(" .. NAME .. ")%.(" .. NAME .. ")%s*=%s*(.-)$")
		if not module then
			return false, "use PROXY SET GLOBAL <module>.<option> = <value>"
		end
		local kind, v = literal(value)
		if not kind then
			return false, format("(auto-config) cannot read the value %s: use a \"string\", a number, true or false", value)
		end
		return { "SET", module, option, kind, v }
	end
	for _, verb in ipairs({ { "SAVE", "INTO" }, { "LOAD", "FROM" } }) do
		r = keyword(rest, verb[1])
		if r then
			r = keyword(r, "CONFIG")
			if not r then return nil end
			r = keyword(r, verb[2])
			local file = r and quoted(r)
			if not file or file == "" then
				return false, format("use PROXY %s CONFIG %s \"<file>\"", verb[1], verb[2])
			end
			return { verb[1], file }
		end
	end
	return nil
end

local function show_value(v)
	if type(v) == "number" and v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
		return format("%.0f", v)
	end
	return tostring(v)
end

local function sorted_keys(t)
	local keys = {}
	for k in pairs(t) do
		local kt = type(k)
		if kt == "string" or kt == "number" or kt == "boolean" then keys[#keys + 1] = k end
	end
	sort(keys, function(a, b)
		local ta, tb = type(a), type(b)
		if ta ~= tb then return ta < tb end
		if ta == "boolean" then return (not a) and b end
		return a < b
	end)
	return keys
end

local function err(message)
	proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = message }
end

local function ok(affected)
	proxy.response = { type = proxy.MYSQLD_PACKET_OK, affected_rows = affected }
end

--- Answer `cmd` ({ type = proxy.COM_QUERY, query = ... }, as proxy.commands.parse gives)
-- from `tbl` (proxy.global.config): proxy.PROXY_SEND_RESULT with proxy.response set, or
-- nil when the query is not for us. Also callable as handle(cmd) (MySQL Proxy's old form).
function M.handle(tbl, cmd)
	if cmd == nil and type(tbl) == "table" and type(tbl.type) == "number" then
		cmd, tbl = tbl, proxy.global.config
	end
	if type(cmd) ~= "table" or cmd.type ~= proxy.COM_QUERY or type(cmd.query) ~= "string" then
		return nil
	end
	local c, problem = M.parse(cmd.query)
	if c == nil then return nil end
	if c == false then
		err(problem .. " (" .. USAGE .. ")")
		return proxy.PROXY_SEND_RESULT
	end

	local verb = c[1]
	if verb == "SHOW" then
		local rows = {}
		for _, module in ipairs(sorted_keys(tbl)) do
			local options = tbl[module]
			if type(options) == "table" then
				for _, option in ipairs(sorted_keys(options)) do
					local v = options[option]
					rows[#rows + 1] = { tostring(module), tostring(option), show_value(v), type(v) }
				end
			end
		end
		proxy.response = {
			type = proxy.MYSQLD_PACKET_OK,
			resultset = {
				fields = {
					{ name = "module", type = proxy.MYSQL_TYPE_STRING },
					{ name = "option", type = proxy.MYSQL_TYPE_STRING },
					{ name = "value", type = proxy.MYSQL_TYPE_STRING },
					{ name = "type", type = proxy.MYSQL_TYPE_STRING },
				},
				rows = rows,
			},
		}
	elseif verb == "SET" then
		local module, option, kind, value = c[2], c[3], c[4], c[5]
		local options = tbl[module]
		if type(options) ~= "table" then
			err(format("(auto-config) module %s is not known (PROXY SHOW CONFIG lists them)", module))
		elseif options[option] == nil then
			err(format("(auto-config) option %s.%s is not known (PROXY SHOW CONFIG lists them)", module, option))
		elseif type(options[option]) ~= kind then
			local want = type(options[option])
			if want == "boolean" or want == "number" or want == "string" then
				err(format("(auto-config) %s.%s expects a %s, got a %s", module, option, want, kind))
			else
				err(format("(auto-config) %s.%s is a %s, which PROXY SET GLOBAL cannot change", module, option, want))
			end
		else
			options[option] = value
			ok(1)
		end
	elseif verb == "SAVE" then
		local done, message = M.save(tbl, c[2])
		if done then ok(0) else err(message) end
	else
		local done, message = M.load(tbl, c[2])
		if done then ok(0) else err(message) end
	end
	return proxy.PROXY_SEND_RESULT
end

local function serialize(v, indent, out, seen)
	local t = type(v)
	if t == "string" then
		out[#out + 1] = format("%q", v)
	elseif t == "number" then
		out[#out + 1] = show_value(v)
	elseif t == "boolean" then
		out[#out + 1] = tostring(v)
	elseif t == "table" then
		if seen[v] then error("(auto-config) the config refers to itself: it cannot be saved", 0) end
		seen[v] = true
		out[#out + 1] = "{\n"
		for _, k in ipairs(sorted_keys(v)) do
			local item = v[k]
			local it = type(item)
			if it == "string" or it == "number" or it == "boolean" or it == "table" then
				out[#out + 1] = indent .. "  ["
				serialize(k, "", out, seen)
				out[#out + 1] = "] = "
				serialize(item, indent .. "  ", out, seen)
				out[#out + 1] = ",\n"
			end
		end
		out[#out + 1] = indent .. "}"
		seen[v] = nil
	end
end

--- Write `tbl` to `filename` as a Lua chunk returning it (strings, numbers, booleans and
-- tables; functions and the like are left out). true, or false and a message.
function M.save(tbl, filename)
	local out = { "-- proxy.global.config, written by PROXY SAVE CONFIG\nreturn " }
	local made, problem = pcall(serialize, tbl, "", out, {})
	if not made then return false, tostring(problem) end
	out[#out + 1] = "\n"
	local f, message = open(filename, "w")
	if not f then return false, format("(auto-config) cannot save the config: %s", tostring(message)) end
	local written, werr = f:write(concat(out))
	local closed, cerr = f:close()
	if not written or not closed then
		return false, format("(auto-config) cannot save the config: %s", tostring(werr or cerr))
	end
	return true
end

--- Merge the table returned by the Lua file `filename` into `tbl` (option by option for
-- known modules). The file runs with no globals. true, or false and a message.
function M.load(tbl, filename)
	local chunk, message = loadfile(filename)
	if not chunk then return false, format("(auto-config) cannot load the config: %s", tostring(message)) end
	setfenv(chunk, {})
	local ran, v = pcall(chunk)
	if not ran then return false, format("(auto-config) the config file failed: %s", tostring(v)) end
	if type(v) ~= "table" then
		return false, format("(auto-config) %s does not return a table (it returns a %s)", filename, type(v))
	end
	for module, options in pairs(v) do
		if type(tbl[module]) == "table" and type(options) == "table" then
			for option, value in pairs(options) do
				tbl[module][option] = value
			end
		else
			tbl[module] = options
		end
	end
	return true
end

-- proxy.global.config:handle(cmd), :load(file), :save(file)
do
	local config = proxy.global.config
	if config == nil then
		config = {}
		proxy.global.config = config
	end
	local mt = getmetatable(config) or {}
	mt.__index = { handle = M.handle, load = M.load, save = M.save }
	setmetatable(config, mt)
end

return M
