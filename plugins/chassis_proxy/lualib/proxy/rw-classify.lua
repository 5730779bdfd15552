-- proxy.rw-classify: which backend a statement may go to, for rw-splitting.lua.
--
-- Pure functions over the tokens of proxy.tokenizer: they route each statement ("any",
-- "ro", "same" or "rw"), say what pins the client to its connection, and which settings
-- a statement makes. rw-splitting.lua holds the hooks and the per-client state; the rules
-- themselves are described at the top of that script.

local tokenizer = require("proxy.tokenizer")

---------------------------------------------------------------------------------------------
-- Which statements may go where
---------------------------------------------------------------------------------------------

-- functions whose result belongs to the previous statement's connection
local SAME_FUNCTIONS = { FOUND_ROWS = true, ROW_COUNT = true, LASTVAL = true }
-- functions that must run on the primary; the value says whether they pin the session
local PRIMARY_FUNCTIONS = {
	GET_LOCK = "GET_LOCK", RELEASE_LOCK = false, RELEASE_ALL_LOCKS = false,
	IS_FREE_LOCK = false, IS_USED_LOCK = false,
	NEXTVAL = "sequence", SETVAL = "sequence",
	MASTER_POS_WAIT = false, MASTER_GTID_WAIT = false,
}
-- system variables that describe the previous statement
local SAME_VARIABLES = {
	["@@IDENTITY"] = true, ["@@LAST_INSERT_ID"] = true, ["@@INSERT_ID"] = true,
	["@@WARNING_COUNT"] = true, ["@@ERROR_COUNT"] = true, ["@@LAST_GTID"] = true,
}
-- statements that create session state on their connection (prepared statements and
-- temporary tables pin through proxy.rw-pins, which sees them closed and dropped)
local PINNING_STATEMENTS = { CALL = "stored procedure", HANDLER = "HANDLER" }
-- functions and variables that read the previous statement's insert id or sequence value
local LAST_VALUE_FUNCTIONS = { LAST_INSERT_ID = true, LASTVAL = true }
local LAST_VALUE_VARIABLES = { ["@@IDENTITY"] = true, ["@@LAST_INSERT_ID"] = true, ["@@INSERT_ID"] = true }
-- "any": where the client is, else wherever a read may go
local ROUTE_RANK = { any = 0, ro = 1, same = 2, rw = 3 }
-- variables whose SET is about the next statement or the binlog, not a setting
local NOT_SETTINGS = {
	AUTOCOMMIT = true, INSERT_ID = true, LAST_INSERT_ID = true, IDENTITY = true,
	TIMESTAMP = true, RAND_SEED1 = true, RAND_SEED2 = true, SQL_LOG_BIN = true,
	PSEUDO_THREAD_ID = true, GTID_SEQ_NO = true, GTID_DOMAIN_ID = true, SERVER_ID = true,
	SKIP_REPLICATION = true, TRANSACTION = true,
}

local function upper_text(t) return t and t.text:upper() end

-- The statements of a query: arrays of tokens without comments, split at ";".
local function statements(tokens)
	local out, cur, depth = {}, {}, 0
	for i = 1, #tokens do
		local t = tokens[i]
		local name = t.token_name
		if name ~= "TK_COMMENT" then
			if name == "TK_OBRACE" then depth = depth + 1
			elseif name == "TK_CBRACE" and depth > 0 then depth = depth - 1 end
			if name == "TK_SEMICOLON" and depth == 0 then
				if #cur > 0 then out[#out + 1] = cur end
				cur = {}
			else
				cur[#cur + 1] = { token_name = name, text = t.text }
			end
		end
	end
	if #cur > 0 then out[#out + 1] = cur end
	return out
end

-- Looks at every token of a statement: route ("ro" unless something needs more) and pin.
-- Reading a user variable needs nothing: set to a constant it is repeated on every
-- connection the client moves to (a setting), set any other way (:=, INTO @x, LOAD DATA,
-- SET @x = expression) the client is pinned already, and unset it is NULL everywhere.
local function scan(ts, route, pin)
	local function need(r)
		if ROUTE_RANK[r] > ROUTE_RANK[route] then route = r end
	end
	local into = false  -- after SELECT ... INTO
	for i = 1, #ts do
		local t = ts[i]
		local name = t.token_name
		local nxt = ts[i + 1]
		if name == "TK_SQL_INTO" then into = true
		elseif name == "TK_SQL_FROM" then into = false end
		if name == "TK_LITERAL" then
			local u = t.text:upper()
			if u:sub(1, 2) == "@@" then
				if SAME_VARIABLES[u] then need("same") else need("rw") end
			elseif u:sub(1, 1) == "@" then
				local prev = ts[i - 1]
				if (nxt and nxt.token_name == "TK_ASSIGN") or ts[1].token_name == "TK_SQL_LOAD"
					or (into and prev and (prev.token_name == "TK_SQL_INTO" or prev.token_name == "TK_COMMA")) then
					need("rw")
					pin = pin or "user variables"
				end
			elseif u == "NEXT" and upper_text(nxt) == "VALUE" then
				need("rw")
				pin = pin or "sequence"
			elseif u == "PREVIOUS" and upper_text(nxt) == "VALUE" then
				need("same")
			elseif (u == "OUTFILE" or u == "DUMPFILE") then
				need("rw")
			end
		elseif name == "TK_FUNCTION" then
			local u = t.text:upper()
			if SAME_FUNCTIONS[u] then
				need("same")
			elseif u == "LAST_INSERT_ID" then
				-- LAST_INSERT_ID() reads the session's value; LAST_INSERT_ID(x) sets it
				local after = ts[i + 2]
				if after and after.token_name ~= "TK_CBRACE" then
					need("rw")
					pin = pin or "LAST_INSERT_ID(expr)"
				else
					need("same")
				end
			elseif PRIMARY_FUNCTIONS[u] ~= nil then
				need("rw")
				pin = pin or PRIMARY_FUNCTIONS[u] or nil
			end
		elseif name == "TK_SQL_FOR" and nxt and (nxt.token_name == "TK_SQL_UPDATE" or upper_text(nxt) == "SHARE") then
			need("rw")  -- a locking read
		elseif name == "TK_SQL_LOCK" then
			need("rw")  -- LOCK TABLES; SELECT ... LOCK IN SHARE MODE; FLUSH ... WITH READ LOCK
			if i == 1 then
				pin = pin or "LOCK TABLES"
			elseif ts[1].token_name ~= "TK_SQL_SELECT" then
				pin = pin or "read lock"
			end
		elseif name == "TK_SQL_INTO" and ts[1].token_name == "TK_SQL_SELECT" then
			need("rw")  -- INTO @var (pins through the variable), OUTFILE, DUMPFILE
		end
	end
	return route, pin
end

-- SET autocommit = 1 / 0 (in their spellings): "on", "off", or nil for any other SET
local function autocommit_value(ts)
	local i = 2
	local u = upper_text(ts[i])
	if u == "SESSION" or u == "LOCAL" then i = i + 1 end
	u = upper_text(ts[i])
	if u == "@@SESSION" or u == "@@LOCAL" then
		if not ts[i + 1] or ts[i + 1].token_name ~= "TK_DOT" then return false end
		i = i + 2
		u = upper_text(ts[i])
	end
	if u ~= "AUTOCOMMIT" and u ~= "@@AUTOCOMMIT" then return nil end
	local op = ts[i + 1]
	if not op or (op.token_name ~= "TK_EQ" and op.token_name ~= "TK_ASSIGN") then return nil end
	local v = upper_text(ts[i + 2])
	if #ts ~= i + 2 then return nil end
	if v == "1" or v == "ON" or v == "TRUE" then return "on" end
	if v == "0" or v == "OFF" or v == "FALSE" then return "off" end
	return nil
end

-- A token a setting's value may consist of: constants and keywords, no variables,
-- functions or subqueries.
local function constant(t)
	local n = t.token_name
	if n == "TK_LITERAL" then return t.text:sub(1, 1) ~= "@" end
	if n == "TK_STRING" or n == "TK_INTEGER" or n == "TK_FLOAT" or n == "TK_MINUS"
		or n == "TK_PLUS" or n == "TK_DOT" then
		return true
	end
	return n:sub(1, 7) == "TK_SQL_" and n ~= "TK_SQL_SELECT"
end

-- SET NAMES / CHARACTER SET, SET [SESSION] TRANSACTION ..., or SET [SESSION] of session
-- variables to constants: the key of the setting (what a later SET replaces), else nil.
local function setting_key(ts)
	local i = 2
	local u = upper_text(ts[i])
	local function all_constant(from)
		for j = from, #ts do
			if not constant(ts[j]) then return false end
		end
		return true
	end
	if u == "NAMES" or u == "CHARSET" then
		return all_constant(i + 1) and "NAMES" or nil
	end
	if ts[i] and ts[i].token_name == "TK_SQL_CHARACTER" and ts[i + 1] and ts[i + 1].token_name == "TK_SQL_SET" then
		return all_constant(i + 2) and "NAMES" or nil
	end
	if u == "SESSION" or u == "LOCAL" then
		i = i + 1
		if upper_text(ts[i]) == "TRANSACTION" then
			return all_constant(i + 1) and "TRANSACTION" or nil
		end
	end
	local names = {}
	while i <= #ts do
		local t = ts[i]
		if t.token_name ~= "TK_LITERAL" then return nil end
		local name = t.text:upper()
		if name == "@@SESSION" or name == "@@LOCAL" then
			if not ts[i + 1] or ts[i + 1].token_name ~= "TK_DOT" or not ts[i + 2] then return nil end
			i = i + 2
			name = ts[i].text:upper()
		elseif name:sub(1, 2) == "@@" then
			name = name:sub(3)
		elseif name:sub(1, 1) == "@" then
			name = "@" .. name:sub(2)  -- a user variable set to a constant: it follows the client
		end
		if NOT_SETTINGS[name] then return nil end
		local op = ts[i + 1]
		if not op or (op.token_name ~= "TK_EQ" and op.token_name ~= "TK_ASSIGN") then return nil end
		i = i + 2
		local first = i
		while ts[i] and ts[i].token_name ~= "TK_COMMA" do
			if not constant(ts[i]) then return nil end
			i = i + 1
		end
		if i == first then return nil end
		names[#names + 1] = name
		i = i + 1
	end
	if #names == 0 then return nil end
	table.sort(names)
	return table.concat(names, ",")
end

-- Tokenizing costs about 0.2 s per MB of SQL: a big statement (a bulk INSERT) is
-- classified from its beginning, unless its text holds anything the rest of the
-- classification looks at (then it is tokenized whole, as every small one is).
local BIG_QUERY, HEAD = 16384, 2048
local MARKERS = {
	"@", ";", "NEXT", "PREVIOUS", "OUTFILE", "DUMPFILE", "FOUND_ROWS", "ROW_COUNT",
	"LASTVAL", "LAST_INSERT_ID", "LOCK", "SETVAL", "MASTER_",
}
local function tokens_of(query)
	if #query <= BIG_QUERY then return tokenizer.tokenize(query) end
	local head = tokenizer.tokenize(query:sub(1, HEAD))
	local first = head[1] and head[1].token_name
	if first ~= "TK_SQL_INSERT" and first ~= "TK_SQL_REPLACE" and first ~= "TK_SQL_UPDATE"
		and first ~= "TK_SQL_DELETE" and first ~= "TK_SQL_SELECT" then
		return tokenizer.tokenize(query)
	end
	local upper = query:upper()
	for _, marker in ipairs(MARKERS) do
		if upper:find(marker, 1, true) then return tokenizer.tokenize(query) end
	end
	if first == "TK_SQL_SELECT" and (upper:find("INTO", 1, true) or upper:find("FOR%s+UPDATE")
		or upper:find("FOR%s+SHARE")) then
		return tokenizer.tokenize(query)
	end
	return head
end

-- One statement: its route ("any", "ro", "same" or "rw"), what pins the client (or nil)
-- and the key of the setting it makes (or nil).
local function classify_statement(ts)
	local first = ts[1]
	local kind = first.token_name
	local word = first.text:upper()

	if kind == "TK_SQL_SELECT" or kind == "TK_OBRACE" or kind == "TK_SQL_WITH" then
		local route, pin = scan(ts, "ro", nil)
		if kind == "TK_SQL_WITH" then
			for i = 2, #ts do
				local n = ts[i].token_name
				if n == "TK_SQL_INSERT" or n == "TK_SQL_UPDATE" or n == "TK_SQL_DELETE" or n == "TK_SQL_REPLACE" then
					route = "rw"
				end
			end
		end
		return route, pin
	elseif kind == "TK_COMMENT_MYSQL" then
		return "rw", "/*! ... */ statement"
	elseif kind == "TK_SQL_SHOW" then
		local second, third = upper_text(ts[2]), upper_text(ts[3])
		if second == "WARNINGS" or second == "ERRORS" or (second == "COUNT" and ts[2].token_name == "TK_FUNCTION") then
			return "same", nil
		end
		if third == "WARNINGS" or third == "ERRORS" then return "same", nil end
		return scan(ts, "rw", nil)
	elseif word == "GET" and upper_text(ts[2]) == "DIAGNOSTICS" then
		return "same", nil
	elseif kind == "TK_SQL_SET" then
		local second = upper_text(ts[2])
		if second == "GLOBAL" or second == "@@GLOBAL" or second == "PASSWORD" then
			return scan(ts, "rw", nil)
		end
		local autocommit = autocommit_value(ts)
		if autocommit == "on" then return "rw", nil end
		if autocommit == "off" then return "rw", "SET autocommit=0" end
		if upper_text(ts[2]) == "TRANSACTION" then return "rw", "SET TRANSACTION" end
		local key = setting_key(ts)
		if key then return "any", nil, key end
		local route, pin = scan(ts, "rw", nil)
		return route, pin or ("SET " .. (ts[2] and ts[2].text or ""))
	elseif (kind == "TK_SQL_CREATE" or kind == "TK_SQL_DROP") then
		return scan(ts, "rw", nil)
	elseif word == "DEALLOCATE" or (kind == "TK_SQL_DROP" and upper_text(ts[2]) == "PREPARE") then
		return "same", nil
	elseif PINNING_STATEMENTS[word] then
		local route, pin = scan(ts, "rw", nil)
		return route, pin or PINNING_STATEMENTS[word]
	end
	return scan(ts, "rw", nil)
end

-- A command: its route, what pins the client, and what it changes when it succeeds.
local function classify(cmd, stmts)
	local t = cmd.type
	if t == proxy.COM_QUERY then
		if #stmts == 0 then return "rw", nil end
		if #stmts == 1 then
			local route, pin, key = classify_statement(stmts[1])
			return route, pin, key and { setting = key, sql = cmd.query } or nil
		end
		local route, pin = "ro", nil
		for _, ts in ipairs(stmts) do
			local r, p, key = classify_statement(ts)
			if key then r, p = "rw", "SET " .. key end  -- settings in a multi-statement: pin
			if ROUTE_RANK[r] > ROUTE_RANK[route] then route = r end
			pin = pin or p
		end
		return route, pin
	elseif t == proxy.COM_INIT_DB then
		return "same", nil, { db = cmd.schema }
	elseif t == proxy.COM_STMT_PREPARE then
		return "rw", nil
	elseif t == proxy.COM_FIELD_LIST then
		return "ro", nil
	elseif t == proxy.COM_CHANGE_USER then
		return "same", "COM_CHANGE_USER"
	elseif t == proxy.COM_SET_OPTION then
		return "same", "COM_SET_OPTION"
	elseif t == proxy.COM_BINLOG_DUMP or t == proxy.COM_REGISTER_SLAVE or t == 0x1e then
		return "rw", "replication"
	elseif t == 0x1f then  -- COM_RESET_CONNECTION
		return "same", nil, { reset = true }
	end
	-- statements, ping, statistics, kill, ...: where the client is
	return "same", nil
end

-- The names a CREATE / DROP [TEMPORARY] TABLE statement names (the table part, without
-- its database), from token i on.
local function table_names(ts, i)
	local names = {}
	while ts[i] and (ts[i].token_name == "TK_SQL_IF" or ts[i].token_name == "TK_SQL_NOT"
		or ts[i].token_name == "TK_SQL_EXISTS") do
		i = i + 1
	end
	while ts[i] and ts[i].token_name == "TK_LITERAL" do
		local name = ts[i].text
		if ts[i + 1] and ts[i + 1].token_name == "TK_DOT" and ts[i + 2] then
			i = i + 2
			name = ts[i].text
		end
		names[#names + 1] = name
		if not (ts[i + 1] and ts[i + 1].token_name == "TK_COMMA") then break end
		i = i + 2
	end
	return names
end

-- What a command does to the pins of proxy.rw-pins: { reads_last_value, autocommit_on,
-- unlock, temp_created = {names}, dropped = {names}, stmt_prepare, stmt_close = id,
-- sql_prepare = name, sql_deallocate = name }.
local function effects(cmd, stmts)
	local e = {}
	local t = cmd.type
	if t == proxy.COM_STMT_PREPARE then e.stmt_prepare = true return e end
	if t == proxy.COM_STMT_CLOSE then e.stmt_close = cmd.stmt_handler_id return e end
	if t ~= proxy.COM_QUERY then
		-- statement commands and the like run where the client is: they read nothing of it
		e.reads_last_value = t ~= proxy.COM_INIT_DB
		return e
	end
	for _, ts in ipairs(stmts or {}) do
		for i = 1, #ts do
			local tok = ts[i]
			local u = tok.text:upper()
			if (tok.token_name == "TK_FUNCTION" and LAST_VALUE_FUNCTIONS[u])
				or (tok.token_name == "TK_LITERAL" and (LAST_VALUE_VARIABLES[u]
					or (u == "PREVIOUS" and upper_text(ts[i + 1]) == "VALUE"))) then
				e.reads_last_value = true
			end
		end
		local kind, second = ts[1].token_name, upper_text(ts[2])
		local word = ts[1].text:upper()
		if kind == "TK_SQL_SET" and autocommit_value(ts) == "on" then
			e.autocommit_on = true
		elseif kind == "TK_SQL_UNLOCK" then
			e.unlock = true
		elseif kind == "TK_SQL_CREATE" and second == "TEMPORARY" and ts[3] and ts[3].token_name == "TK_SQL_TABLE" then
			e.temp_created = table_names(ts, 4)
		elseif kind == "TK_SQL_DROP" then
			local i = second == "TEMPORARY" and 3 or 2
			if ts[i] and ts[i].token_name == "TK_SQL_TABLE" then e.dropped = table_names(ts, i + 1) end
			if second == "PREPARE" and ts[3] then e.sql_deallocate = ts[3].text end
		elseif word == "PREPARE" and ts[2] then
			e.sql_prepare = ts[2].text
		elseif word == "DEALLOCATE" and ts[3] then
			e.sql_deallocate = ts[3].text
		end
	end
	return e
end

return {
	statements = statements,
	tokens_of = tokens_of,
	classify = classify,
	effects = effects,
}
