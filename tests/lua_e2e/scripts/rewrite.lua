-- Query rewriting: the table old_orders was renamed to lua_orders; clients that still use
-- the old name get the new table. Only names are rewritten (the tokenizer tells names
-- from strings), and the rewritten query goes to the server instead of the client's.
local tokenizer = require("proxy.tokenizer")

local RENAMED = { old_orders = "lua_orders" }

function read_query(packet)
	if packet:byte() ~= proxy.COM_QUERY then return end
	local tokens = tokenizer.tokenize(packet:sub(2))
	local changed = false
	local out = {}
	for i = 1, #tokens do
		local t = tokens[i]
		local new_name = t.token_name == "TK_LITERAL" and RENAMED[t.text:lower()]
		if new_name then changed = true end
		out[i] = { token_name = t.token_name, text = new_name or t.text }
	end
	if not changed then return end
	local sql = tokenizer.tokens_to_query(out)
	proxy.global.rewritten = sql
	proxy.queries:append(1, string.char(proxy.COM_QUERY) .. sql)
	return proxy.PROXY_SEND_QUERY
end
