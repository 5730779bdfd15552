-- proxy.rw-pins: what keeps an rw-splitting.lua client on its read-write connection, and
-- when each reason ends.
--
-- A pin is session state that lives on one server connection. Each reason is released
-- by its own rule (docs/lualib.md, "When pins are released"):
--
-- * the insert id (a result with one, LAST_INSERT_ID(expr)) and a sequence's value
--   (NEXTVAL): until the next statement that does not read them (LAST_INSERT_ID(),
--   @@identity, @@last_insert_id, LASTVAL, PREVIOUS VALUE FOR);
-- * temporary tables: until the last one the client created is dropped;
-- * prepared statements (COM_STMT_PREPARE, PREPARE): until the last one is closed
--   (COM_STMT_CLOSE, DEALLOCATE / DROP PREPARE);
-- * SET autocommit = 0: until SET autocommit = 1;
-- * SET TRANSACTION (the next transaction's characteristics): until that transaction ends;
-- * LOCK TABLES, FLUSH ... WITH READ LOCK: until UNLOCK TABLES;
-- * anything else (user variables set to anything but constants, GET_LOCK, CALL,
--   HANDLER, SET of session variables to expressions, COM_CHANGE_USER, ...): for the rest
--   of the session. COM_RESET_CONNECTION releases every pin.
--
-- Pure Lua over the classification of proxy.rw-classify; rw-splitting.lua calls
-- before() ahead of each command and after() with its result.

local M = {}
M.__index = M

-- reasons released by the next statement that does not read the value
local LAST_VALUE = { ["LAST_INSERT_ID"] = true, ["LAST_INSERT_ID(expr)"] = true, sequence = true }
-- reasons released by a statement kind
local RELEASED_BY = {
	["SET autocommit=0"] = "autocommit_on",
	["LOCK TABLES"] = "unlock",
	["read lock"] = "unlock",
}

function M.new()
	return setmetatable({ reasons = {}, order = {}, temporary = {}, prepared = {}, ntemp = 0, nprep = 0 }, M)
end

local function count(set)
	local n = 0
	for _ in pairs(set) do n = n + 1 end
	return n
end

-- Why the client is pinned (the first reason still held), or nil.
function M:reason()
	for _, r in ipairs(self.order) do
		if self.reasons[r] then return r end
	end
	if self.ntemp > 0 then return "temporary table" end
	if self.nprep > 0 then return "prepared statement" end
	return nil
end

function M:add(reason)
	if not self.reasons[reason] then
		self.reasons[reason] = true
		self.order[#self.order + 1] = reason
	end
end

function M:release(reason)
	self.reasons[reason] = nil
	for i, r in ipairs(self.order) do
		if r == reason then table.remove(self.order, i) break end
	end
end

function M:reset()
	self.reasons, self.order, self.temporary, self.prepared = {}, {}, {}, {}
	self.ntemp, self.nprep = 0, 0
	self.transaction = nil
end

-- Before a command runs: release what it ends (eff: rw-classify's effects()).
function M:before(eff)
	for reason in pairs(self.reasons) do
		if (LAST_VALUE[reason] and not eff.reads_last_value)
			or (RELEASED_BY[reason] and eff[RELEASED_BY[reason]]) then
			self:release(reason)
		end
	end
	if eff.stmt_close and self.prepared[eff.stmt_close] then
		self.prepared[eff.stmt_close] = nil
		self.nprep = count(self.prepared)
	end
	if self.transaction == "ran" then self.transaction = "next" end
end

-- After a command's result. ok: it succeeded; res: inj.resultset (a prepared statement's
-- result is buffered, to read its id).
function M:after(eff, ok, res, in_trans)
	if self.reasons["SET TRANSACTION"] then
		if self.transaction == nil then
			self.transaction = "ran"  -- the SET TRANSACTION itself
		elseif self.transaction == "next" and not in_trans then
			self:release("SET TRANSACTION")
			self.transaction = nil
		end
	end
	if not ok then return end
	if res.insert_id and res.insert_id > 0 then self:add("LAST_INSERT_ID") end
	for _, name in ipairs(eff.temp_created or {}) do self.temporary[name] = true end
	for _, name in ipairs(eff.dropped or {}) do self.temporary[name] = nil end
	self.ntemp = count(self.temporary)
	if eff.stmt_prepare then
		local okraw, raw = pcall(function() return res.raw end)
		if okraw and raw and #raw >= 5 and raw:byte(1) == 0 then
			local a, b, c, d = raw:byte(2, 5)
			self.prepared[a + b * 256 + c * 65536 + d * 16777216] = true
		else
			self:add("prepared statement")  -- its id is unknown: it cannot be told closed
		end
	end
	if eff.sql_prepare then self.prepared["sql:" .. eff.sql_prepare] = true end
	if eff.sql_deallocate then self.prepared["sql:" .. eff.sql_deallocate] = nil end
	self.nprep = count(self.prepared)
end

return M
