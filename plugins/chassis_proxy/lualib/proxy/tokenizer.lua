-- proxy.tokenizer: helpers over mysql.tokenizer's tokens, as MySQL Proxy 0.8's scripts use them.
--
--   local tokenizer = require("proxy.tokenizer")
--   local tokens = tokenizer.tokenize(packet:sub(2))
--   local key = tokenizer.normalize(tokens)     -- "SELECT * FROM `t` WHERE `id` = ? "
--
-- A token is anything with `token_name` and `text` fields: the userdata of mysql.tokenizer
-- or a plain table. Differences from MySQL Proxy 0.8.5 (see docs/lualib.md): strings are
-- re-quoted as SQL ('...' with the original escapes; 0.8.5 used Lua's %q, which doubled
-- backslashes), tokens_to_query() keeps /*! ... */ comments and re-quotes names that need
-- backticks, and normalize() doubles backticks inside names.

local mysql_tokenizer = require("mysql.tokenizer")

local type = type
local concat = table.concat
local upper, sub, gsub, find = string.upper, string.sub, string.gsub, string.find

local M = {
	_DESCRIPTION = "tokenize, normalize and re-assemble SQL (chassis, MySQL Proxy 0.8 names)",
}

-- Words that are not keywords of the tokenizer but start transaction statements; normalize()
-- keeps them (upper-cased) instead of quoting them as names, only at statement start.
local STATEMENT_WORDS = { COMMIT = true, ROLLBACK = true, BEGIN = true, START = true }

local function tokens_of(tokens)
	if type(tokens) == "string" then return mysql_tokenizer.tokenize(tokens) end
	return tokens
end

--- The tokens of `sql` (mysql.tokenizer.tokenize; kept for MySQL Proxy's scripts).
function M.tokenize(sql)
	return mysql_tokenizer.tokenize(sql)
end

local function backticked(name)
	return "`" .. gsub(name, "`", "``") .. "`"
end

--- The query with literals replaced by `?`, comments dropped, names in backticks and
-- keywords upper-cased; every token is followed by a space (function names by nothing).
-- This is the key histogram-style scripts count queries by. `tokens` may also be SQL text.
function M.normalize(tokens)
	tokens = tokens_of(tokens)
	local out, n = {}, 0
	for i = 1, #tokens do
		local token = tokens[i]
		if token ~= nil then
			local name, text = token.token_name, token.text
			local piece
			if name == "TK_COMMENT" then
				piece = nil
			elseif name == "TK_COMMENT_MYSQL" then
				-- the server version decides what is inside: pass it on as written
				piece = "/*!" .. text .. "*/ "
			elseif name == "TK_LITERAL" then
				local u = upper(text)
				if sub(text, 1, 1) == "@" then
					piece = text .. " "
				elseif n == 0 and STATEMENT_WORDS[u] then
					piece = u .. " "
				elseif n == 1 and u == "TRANSACTION" and out[1] == "START " then
					piece = u .. " "
				else
					piece = backticked(text) .. " "
				end
			elseif name == "TK_STRING" or name == "TK_INTEGER" or name == "TK_FLOAT" then
				piece = "? "
			elseif name == "TK_FUNCTION" then
				piece = upper(text)
			else
				piece = upper(text) .. " "
			end
			if piece then
				n = n + 1
				out[n] = piece
			end
		end
	end
	return concat(out)
end

--- The first token that is not a comment (nil if there is none).
function M.first_stmt_token(tokens)
	tokens = tokens_of(tokens)
	for i = 1, #tokens do
		local token = tokens[i]
		if token ~= nil and token.token_name ~= "TK_COMMENT" then return token end
	end
	return nil
end

-- A string token's text is what stood between the quotes, escapes as written and a doubled
-- quote already made single. Quote it again so that the server reads the same value: keep
-- backslash escapes, double single quotes (valid with and without NO_BACKSLASH_ESCAPES).
local function quote_string(text)
	local out, n, i, len = { "'" }, 1, 1, #text
	while i <= len do
		local j = find(text, "[\\']", i)
		if not j then
			n = n + 1; out[n] = sub(text, i)
			break
		end
		n = n + 1; out[n] = sub(text, i, j - 1)
		if sub(text, j, j) == "'" then
			n = n + 1; out[n] = "''"
			i = j + 1
		elseif j == len then  -- a lone trailing backslash would escape our closing quote
			n = n + 1; out[n] = "\\\\"
			i = j + 1
		else
			n = n + 1; out[n] = sub(text, j, j + 1)
			i = j + 2
		end
	end
	n = n + 1; out[n] = "'"
	return concat(out)
end
M.quote_string = quote_string

-- A name that was written in backticks (a keyword, spaces, ...) needs them again; a plain
-- name and an @variable do not. Decided by tokenizing the name alone, cached.
local plain_names, plain_count = {}, 0

local function needs_backticks(text)
	local known = plain_names[text]
	if known ~= nil then return not known end
	local plain = false
	if find(text, "^[%w_@]+$") then
		local t = mysql_tokenizer.tokenize(text)
		plain = #t == 1 and t[1].token_name == "TK_LITERAL" and t[1].text == text
	end
	if plain_count >= 4096 then plain_names, plain_count = {}, 0 end
	plain_names[text] = plain
	plain_count = plain_count + 1
	return not plain
end

local function quote_name(text)
	if needs_backticks(text) then return backticked(text) end
	return text
end
M.quote_name = quote_name

--- The token texts without comments; strings re-quoted when `quote_strings` is true.
function M.bare_tokens(tokens, quote_strings)
	tokens = tokens_of(tokens)
	local out, n = {}, 0
	for i = 1, #tokens do
		local token = tokens[i]
		if token ~= nil then
			local name = token.token_name
			if name == "TK_STRING" and quote_strings then
				n = n + 1; out[n] = quote_string(token.text)
			elseif name ~= "TK_COMMENT" then
				n = n + 1; out[n] = token.text
			end
		end
	end
	return out
end

--- SQL text made of tokens `first` to `last` (default: all), comments dropped, one space
-- after every token except a function name (so `COUNT(` stays together).
function M.tokens_to_query(tokens, first, last)
	tokens = tokens_of(tokens)
	first = first or 1
	last = last or #tokens
	local out, n = {}, 0
	for i = first, last do
		local token = tokens[i]
		if token ~= nil then
			local name, text = token.token_name, token.text
			if name == "TK_STRING" then
				n = n + 1; out[n] = quote_string(text) .. " "
			elseif name == "TK_LITERAL" then
				n = n + 1; out[n] = quote_name(text) .. " "
			elseif name == "TK_COMMENT_MYSQL" then
				n = n + 1; out[n] = "/*!" .. text .. "*/ "
			elseif name == "TK_FUNCTION" then
				n = n + 1; out[n] = text
			elseif name ~= "TK_COMMENT" then
				n = n + 1; out[n] = text .. " "
			end
		end
	end
	return concat(out)
end

--- The token texts without comments (texts, not token objects: as in MySQL Proxy).
function M.tokens_without_comments(tokens)
	tokens = tokens_of(tokens)
	local out, n = {}, 0
	for i = 1, #tokens do
		local token = tokens[i]
		if token ~= nil and token.token_name ~= "TK_COMMENT" then
			n = n + 1; out[n] = token.text
		end
	end
	return out
end

return M
