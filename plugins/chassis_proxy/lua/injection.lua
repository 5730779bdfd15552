-- The injection part of the Lua bridge (injection.py is its Python half): the `inj` object
-- read_query_result(inj) gets, with inj.resultset and its fields and rows.
--
-- bridge.lua runs this chunk with the `py` callbacks; it returns
-- make_injection(r, fields_fn, row_fn), where `r` is the summary table of one injected
-- command's response (injection.py's ResultView.summary()) and fields_fn / row_fn decode
-- the buffered result on demand.

local py = ...

local type, tostring, rawget = type, tostring, rawget
local getmetatable, newproxy = getmetatable, newproxy
local error = error
local string_format = string.format

local py_log = py.log

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
		elseif key == "session_variables" then
			return r.session_variables
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

return make_injection
