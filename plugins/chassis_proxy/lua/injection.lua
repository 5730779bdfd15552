-- The injection part of the Lua bridge (injection.py is its Python half): the `inj` object
-- read_query_result(inj) gets, with inj.resultset and its fields and rows.
--
-- bridge.lua runs this chunk with the `py` callbacks (already wrapped by limits.lua); it
-- returns make_injection(view, ...), where `view` is injection.py's ResultView of one
-- injected command's response, which py.result_fields and py.result_row decode on demand,
-- and the rest are the values the objects return as they are.

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

local py_fields, py_row = py.result_fields, py.result_row

-- a row's values, as injection.py's ResultView.row() returns them: true and the values,
-- nil past the end, false and why the row cannot be read
local function row_values(flag, ...)
	if flag then return { ... } end
	return nil, ...
end

-- r: the values of one response (see make_injection); view: injection.py's ResultView
local function make_resultset(r, view)
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
			if not fields_cache then fields_cache = make_fields(py_fields(view)) end
			return fields_cache
		elseif key == "rows" then
			if not r.buffered then not_buffered("rows") end
			local i = 0
			return function()
				i = i + 1
				local row, err = row_values(py_row(view, i))
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

-- The arguments are injection.py's ResultView.arguments(): the view, then the values the
-- objects return as they are.
local function make_injection(view, id, query, query_time, response_time, query_status, affected_rows,
		insert_id, warning_count, row_count, bytes, in_trans, auto_commit, no_good_index_used,
		no_index_used, buffered, raw, session_variables)
	local r = {
		query_status = query_status, affected_rows = affected_rows, insert_id = insert_id,
		warning_count = warning_count, row_count = row_count, bytes = bytes,
		in_trans = in_trans, auto_commit = auto_commit, no_good_index_used = no_good_index_used,
		no_index_used = no_index_used, buffered = buffered, raw = raw,
		session_variables = session_variables,
	}
	local u = newproxy(true)
	local mt = getmetatable(u)
	mt.__index = function(_, key)
		if key == "id" or key == "type" then return id
		elseif key == "query" then return query
		elseif key == "query_time" then return query_time
		elseif key == "response_time" then return response_time
		elseif key == "resultset" then return make_resultset(r, view)
		end
		py_log("message", string_format("inj[%s] ... not found", tostring(key)))
		return nil
	end
	mt.__newindex = function(_, key) error(string_format("inj.%s is read-only", tostring(key)), 2) end
	mt.__tostring = function() return "injection" end
	return u
end

return make_injection
