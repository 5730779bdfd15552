--[[
shortcuts.lua: a query rewriter. Short commands typed in the mysql client become real ones:

  ls              SHOW TABLES
  ps              SHOW FULL PROCESSLIST
  whoami          SELECT CURRENT_USER()
  cd <database>   switch the default database (sent as COM_INIT_DB, like USE)

Anything else goes to the server unchanged.
--]]

local shortcuts = {
	ls = "SHOW TABLES",
	ps = "SHOW FULL PROCESSLIST",
	whoami = "SELECT CURRENT_USER()",
}

function read_query(packet)
	if packet:byte() ~= proxy.COM_QUERY then return end
	local text = packet:sub(2):match("^%s*(.-)[%s;]*$")

	local replacement = shortcuts[text:lower()]
	if replacement then
		proxy.queries:append(1, string.char(proxy.COM_QUERY) .. replacement)
		return proxy.PROXY_SEND_QUERY
	end

	local db = text:match("^[cC][dD]%s+`?([%w_$]+)`?$")
	if db then
		proxy.queries:append(2, string.char(proxy.COM_INIT_DB) .. db)
		return proxy.PROXY_SEND_QUERY
	end
end
