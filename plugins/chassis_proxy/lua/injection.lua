-- The injection part of the Lua bridge (injection.py is its Python half): the `inj` object
-- read_query_result(inj) gets, with inj.resultset and its fields and rows.
--
-- bridge.lua runs this chunk with the `py` callbacks (already wrapped by limits.lua); it
-- returns make_injection(view, ...), where `view` is injection.py's ResultView of one
-- injected command's response, which py.result_fields and py.result_rows decode on demand,
-- and the rest are the values the objects return as they are.

local py = ...

local type, tostring, rawget, unpack = type, tostring, rawget, unpack
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

local py_fields, py_row, py_rows = py.result_fields, py.result_row, py.result_rows

-- a row's values, as injection.py's ResultView.row() returns them: true and the values,
-- nil past the end, false and why the row cannot be read
local function row_values(flag, ...)
	if flag then return { ... } end
	return nil, ...
end

-- An injection and its resultsets are proxies that share one metatable each (made once);
-- each keeps its values in its environment table (debug.setfenv on a userdata), the
-- arguments of make_injection in order: no table of fields or closures per call.
local debug_getfenv, debug_setfenv = debug.getfenv, debug.setfenv
local VIEW, ID, QUERY, QUERY_TIME, RESPONSE_TIME = 1, 2, 3, 4, 5
local FIELD = { query_status = 6, affected_rows = 7, insert_id = 8, warning_count = 9,
	row_count = 10, bytes = 11 }
local IN_TRANS, AUTO_COMMIT, NO_GOOD_INDEX_USED, NO_INDEX_USED = 12, 13, 14, 15
local BUFFERED, RAW, SESSION_VARIABLES, FIELDS = 16, 17, 18, 19

-- The rows after the first `taken`: injection.py's ResultView.rows() hands a few at a
-- time, twice as many each time: the number of columns, of rows, then their values
-- (false and why, for a row it cannot read). `batch` holds them, `at` is where the next
-- row's values begin.
local function batched(view, taken)
	local batch, at, width, left, want = nil, 0, 0, 0, 2
	return function()
		if left == 0 then
			batch = { py_rows(view, taken + 1, want) }
			want = want * 2
			if batch[1] == false then error(batch[2], 2) end
			width, left, at = batch[1], batch[2], 2
			if left == 0 then return nil end
		end
		local row = { unpack(batch, at + 1, at + width) }  -- NULLs stay holes, as { ... } left them
		at = at + width
		left = left - 1
		taken = taken + 1
		return row
	end
end

local resultset_proto = newproxy(true)
do
	local mt = getmetatable(resultset_proto)
	mt.__index = function(u, key)
		local r = debug_getfenv(u)
		local at = FIELD[key]
		if at then
			return r[at]
		elseif key == "flags" then
			return {
				in_trans = r[IN_TRANS], auto_commit = r[AUTO_COMMIT],
				no_good_index_used = r[NO_GOOD_INDEX_USED], no_index_used = r[NO_INDEX_USED],
			}
		elseif key == "session_variables" then
			return r[SESSION_VARIABLES]
		elseif key == "raw" then
			if not r[BUFFERED] then not_buffered("raw") end
			return r[RAW]
		elseif key == "fields" then
			if not r[BUFFERED] then not_buffered("fields") end
			local fields = r[FIELDS]
			if not fields then
				fields = make_fields(py_fields(r[VIEW]))
				r[FIELDS] = fields
			end
			return fields
		elseif key == "rows" then
			if not r[BUFFERED] then not_buffered("rows") end
			-- The first row comes alone (ResultView.row(): a script that looks at one row
			-- decodes one, and its iterator holds two values); the others in batches.
			local view, more = r[VIEW], false
			return function()
				if more then return more() end
				if more == false then
					more = nil
					local row, err = row_values(py_row(view, 1))
					if err then error(err, 2) end
					return row
				end
				more = batched(view, 1)
				return more()
			end
		end
		return nil
	end
	mt.__newindex = function(_, key) error(string_format(".resultset.%s is read-only", tostring(key)), 2) end
	mt.__tostring = function() return "resultset" end
end

local injection_proto = newproxy(true)
do
	local mt = getmetatable(injection_proto)
	mt.__index = function(u, key)
		local r = debug_getfenv(u)
		if key == "id" or key == "type" then return r[ID]
		elseif key == "query" then return r[QUERY]
		elseif key == "query_time" then return r[QUERY_TIME]
		elseif key == "response_time" then return r[RESPONSE_TIME]
		elseif key == "resultset" then
			local rs = newproxy(resultset_proto)
			debug_setfenv(rs, r)
			return rs
		end
		py_log("message", string_format("inj[%s] ... not found", tostring(key)))
		return nil
	end
	mt.__newindex = function(_, key) error(string_format("inj.%s is read-only", tostring(key)), 2) end
	mt.__tostring = function() return "injection" end
end

-- The arguments are injection.py's ResultView.arguments(): the view (py.result_fields and
-- py.result_rows read it), then the values the objects return as they are (id, query,
-- query_time, response_time, query_status, affected_rows, insert_id, warning_count,
-- row_count, bytes, in_trans, auto_commit, no_good_index_used, no_index_used, buffered,
-- raw, session_variables).
local function make_injection(...)
	local u = newproxy(injection_proto)
	debug_setfenv(u, { ... })
	return u
end

return make_injection
