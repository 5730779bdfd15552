-- proxy.parser: which tables a statement reads and writes, from its tokens.
--
--   local parser = require("proxy.parser")
--   local tables = parser.get_tables(tokenizer.tokenize(query))
--   -- { ["shop.orders"] = "write", ["shop.items"] = "read" }
--
-- Keys are "db.table" (the client's default database when the statement names none, just
-- "table" when there is no default database either); a table both read and written is
-- "write". Understood: SELECT (FROM lists, every kind of JOIN, derived tables and
-- subqueries, UNION), INSERT / REPLACE (... SELECT), UPDATE (multi-table), DELETE (single
-- and both multi-table forms, aliases resolved), CREATE / DROP / ALTER / RENAME / TRUNCATE
-- TABLE, CREATE / DROP INDEX ... ON, LOCK TABLES, REFERENCES and LIKE; several statements
-- separated by ";". Other statements give an empty table.
--
-- MySQL Proxy 0.8.5 also returned this shape; it missed db prefixes outside SELECT/DELETE,
-- took the column names of ON conditions for tables and kept the DDL state in a global
-- between calls (after one CREATE TABLE every later DDL was misread). See docs/lualib.md.

local type, upper = type, string.upper
local find, sub = string.find, string.sub

local M = {
	_DESCRIPTION = "tables read and written by a statement (chassis, MySQL Proxy 0.8 names)",
}

local function client_default_db()
	local p = _G.proxy
	if type(p) ~= "table" then return nil end
	local conn = p.connection
	if conn == nil then return nil end
	local client = conn.client
	if client == nil then return nil end
	return client.default_db
end

--- "db.tbl": `db_name`, or the client's default database when nil; just `tbl` when the
-- database is unknown or empty (0.8.5 gave ".tbl" for a client without a default db).
function M.tablename_expand(tbl_name, db_name)
	if db_name == nil then db_name = client_default_db() end
	if db_name ~= nil and db_name ~= "" then
		return db_name .. "." .. tbl_name
	end
	return tbl_name
end

-- keywords that may stand between the word that announces a table and the table
local MODIFIERS = {
	TK_SQL_IF = true, TK_SQL_NOT = true, TK_SQL_EXISTS = true, TK_SQL_IGNORE = true,
	TK_SQL_LOW_PRIORITY = true, TK_SQL_DELAYED = true, TK_SQL_HIGH_PRIORITY = true,
	TK_SQL_INTO = true, TK_SQL_TABLE = true,
}

-- keywords after which a comma no longer starts another table of the list
local LIST_END = {
	TK_SQL_WHERE = true, TK_SQL_GROUP = true, TK_SQL_ORDER = true, TK_SQL_LIMIT = true,
	TK_SQL_HAVING = true, TK_SQL_UNION = true, TK_SQL_INTO = true, TK_SQL_PROCEDURE = true,
	TK_SQL_FOR = true, TK_SQL_LOCK = true, TK_SQL_SET = true, TK_SQL_VALUES = true,
	TK_SQL_SELECT = true,
}

-- words naming what a CREATE / DROP / ALTER / RENAME works on
local OBJECT_KINDS = {
	TABLE = "table", INDEX = "index", VIEW = "view",
	DATABASE = "other", SCHEMA = "other", PROCEDURE = "other", FUNCTION = "other",
	TRIGGER = "other", EVENT = "other", USER = "other", ROLE = "other", SERVER = "other",
	TABLESPACE = "other", LOGFILE = "other", SEQUENCE = "other",
}

local function is_name(t)
	if t == nil then return false end
	local n = t.token_name
	return n == "TK_LITERAL" or n == "TK_FUNCTION"
end

-- The significant tokens: no comments or unknown bytes; the inside of /*!NNNNN ... */ is
-- tokenized and spliced in, as the server will run it.
local function significant(tokens, out)
	out = out or {}
	for i = 1, #tokens do
		local t = tokens[i]
		if t ~= nil then
			local name = t.token_name
			if name == "TK_COMMENT_MYSQL" then
				local text = t.text
				local _, e = find(text, "^%d%d%d%d%d%d?")
				if e then text = sub(text, e + 1) end
				significant(require("mysql.tokenizer").tokenize(text), out)
			elseif name ~= "TK_COMMENT" and name ~= "TK_UNKNOWN" then
				out[#out + 1] = { token_name = name, text = t.text }
			end
		end
	end
	return out
end

-- One statement: ts[s .. e]. Adds to `tables`.
local function statement_tables(ts, s, e, tables, default_db)
	local function mark(name, db, mode)
		local key = M.tablename_expand(name, db or default_db)
		if tables[key] ~= "write" then tables[key] = mode end
		return key
	end

	local first = ts[s]
	local stmt = first.token_name == "TK_OBRACE" and "SELECT" or upper(first.text)

	local depth = 0
	local lists = { [0] = false }  -- per brace depth: the mode of the table list we are in
	local expect = false           -- mode of the table the next name is, if one is announced
	local aliases = {}             -- alias -> key
	local delete_targets = nil     -- DELETE t1, t2 FROM ...: names before FROM
	local on_is_table, alter_rename, rename_to, lock_tables = false, false, false, false
	local last_key = nil
	local i = s + 1

	-- the object kind after CREATE/DROP/ALTER/RENAME; i moves past it
	local function object_kind()
		for j = s + 1, e do
			local kind = OBJECT_KINDS[upper(ts[j].text)]
			if kind then
				i = j + 1
				return kind
			end
		end
		return nil
	end

	-- a table reference at i: [db .] name [[AS] alias]; returns the index after it
	local function reference(j, mode)
		local db, name
		if ts[j + 1] and ts[j + 1].token_name == "TK_DOT" and is_name(ts[j + 2]) then
			db, name = ts[j].text, ts[j + 2].text
			j = j + 3
		else
			name = ts[j].text
			j = j + 1
		end
		last_key = mark(name, db, mode)
		local t = ts[j]
		if t and j <= e then
			if t.token_name == "TK_SQL_AS" and ts[j + 1] and ts[j + 1].token_name == "TK_LITERAL" then
				aliases[ts[j + 1].text] = last_key
				j = j + 2
			elseif t.token_name == "TK_LITERAL" then
				aliases[t.text] = last_key
				j = j + 1
			end
		end
		return j
	end

	if stmt == "SELECT" or stmt == "WITH" then
		i = s  -- a leading "(" counts
	elseif stmt == "INSERT" or stmt == "REPLACE" then
		expect = "write"
	elseif stmt == "UPDATE" then
		lists[0] = "write"
		expect = "write"
	elseif stmt == "DELETE" then
		-- DELETE [LOW_PRIORITY] [QUICK] [IGNORE] [t1[.*], t2 ...] FROM ...
		while i <= e and ts[i].token_name ~= "TK_SQL_FROM" do
			local t = ts[i]
			if t.token_name == "TK_LITERAL" and upper(t.text) ~= "QUICK" then
				delete_targets = delete_targets or {}
				if ts[i + 1] and ts[i + 1].token_name == "TK_DOT" and is_name(ts[i + 2]) then
					delete_targets[#delete_targets + 1] = { ts[i + 2].text, t.text }
					i = i + 3
				else
					delete_targets[#delete_targets + 1] = { t.text }
					i = i + 1
				end
			else
				i = i + 1
			end
		end
	elseif stmt == "CREATE" or stmt == "DROP" then
		local kind = object_kind()
		if kind == "table" then
			if stmt == "DROP" then lists[0] = "write" end
			expect = "write"
		elseif kind == "index" then
			on_is_table = true
		elseif kind ~= "view" then
			return
		end
	elseif stmt == "ALTER" then
		if object_kind() ~= "table" then return end
		expect = "write"
		alter_rename = true
	elseif stmt == "RENAME" then
		if object_kind() ~= "table" then return end
		lists[0] = "write"
		expect = "write"
		rename_to = true
	elseif stmt == "TRUNCATE" then
		expect = "write"
	elseif stmt == "LOCK" then
		if ts[i] and (upper(ts[i].text) == "TABLES" or upper(ts[i].text) == "TABLE") then i = i + 1 end
		lists[0] = "read"
		expect = "read"
		lock_tables = true
	else
		return
	end

	while i <= e do
		local t = ts[i]
		local name = t.token_name
		if expect and is_name(t) then
			i = reference(i, expect)
			expect = false
		elseif expect and MODIFIERS[name] then
			i = i + 1
		else
			local announced = expect
			expect = false
			if name == "TK_OBRACE" then
				depth = depth + 1
				-- "FROM (a JOIN b)": a table list goes on inside; "(SELECT" ends it again
				lists[depth] = announced or false
				expect = announced
			elseif name == "TK_CBRACE" then
				lists[depth] = nil
				if depth > 0 then depth = depth - 1 end
			elseif name == "TK_COMMA" then
				expect = lists[depth]
			elseif name == "TK_SQL_FROM" then
				local mode = "read"
				if depth == 0 and stmt == "DELETE" and not delete_targets then mode = "write" end
				lists[depth] = mode
				expect = mode
			elseif name == "TK_SQL_JOIN" or name == "TK_SQL_STRAIGHT_JOIN" then
				expect = lists[depth] or "read"
				lists[depth] = expect
			elseif name == "TK_SQL_USING" and stmt == "DELETE" and depth == 0
				and not (ts[i + 1] and ts[i + 1].token_name == "TK_OBRACE") then
				lists[0] = "read"
				expect = "read"
			elseif name == "TK_SQL_REFERENCES" or (name == "TK_SQL_LIKE" and stmt == "CREATE" and depth <= 1) then
				expect = "read"
			elseif name == "TK_SQL_ON" and on_is_table and depth == 0 then
				expect = "write"
			elseif name == "TK_SQL_TO" and rename_to and depth == 0 then
				expect = "write"
			elseif name == "TK_SQL_RENAME" and alter_rename and depth == 0 then
				local nxt = ts[i + 1]
				if nxt and (nxt.token_name == "TK_SQL_TO" or nxt.token_name == "TK_SQL_AS") then
					i = i + 1
					expect = "write"
				elseif is_name(nxt) then
					expect = "write"
				end
			elseif name == "TK_SQL_WRITE" and lock_tables and last_key then
				tables[last_key] = "write"
			elseif LIST_END[name] then
				lists[depth] = false
			end
			i = i + 1
		end
	end

	if delete_targets then
		for _, target in ipairs(delete_targets) do
			local tbl, db = target[1], target[2]
			local key = (db == nil and aliases[tbl]) or M.tablename_expand(tbl, db or default_db)
			tables[key] = "write"
		end
	end
end

--- The tables `tokens` (from tokenize(), or SQL text) reads and writes:
-- { ["db.tbl"] = "read" | "write" }. `default_db` (optional, ours) stands in for the
-- client's default database.
function M.get_tables(tokens, default_db)
	if type(tokens) == "string" then tokens = require("mysql.tokenizer").tokenize(tokens) end
	local ts = significant(tokens)
	local tables = {}
	local s, depth = 1, 0
	for i = 1, #ts + 1 do
		local t = ts[i]
		local name = t and t.token_name
		if name == "TK_OBRACE" then
			depth = depth + 1
		elseif name == "TK_CBRACE" then
			if depth > 0 then depth = depth - 1 end
		elseif t == nil or (name == "TK_SEMICOLON" and depth == 0) then
			if i > s then statement_tables(ts, s, i - 1, tables, default_db) end
			s = i + 1
		end
	end
	return tables
end

return M
