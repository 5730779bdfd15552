-- rw-splitting.lua: read/write splitting with connection pooling, for chassis.
--
--   chassis --plugins=proxy --proxy-backend-addresses=primary:3306 \
--           --proxy-read-only-backend-addresses=replica:3306 --proxy-lua-script=rw-splitting.lua
--
-- Reads outside transactions go to a read-only backend; everything else goes to a
-- read-write one. A client stays on its read-write connection while session state lives
-- there. The default database follows the client onto every connection it uses.
--
-- Written for chassis, after MySQL Proxy 0.8's lib/rw-splitting.lua, whose pooling it
-- keeps: new clients log in to backends whose pool is below min_idle_connections, and
-- the login connection is parked (backend_ndx = 0). The routing is new. MySQL Proxy's
-- version sent user variables, temporary tables, SET, prepared statements, GET_LOCK,
-- FOUND_ROWS() and locking reads to whatever replica was idle, and shared its
-- transaction flag between all clients. Here:
--
-- * a statement is a read (may go to a replica) only if it is a SELECT without FOR
--   UPDATE / LOCK IN SHARE MODE / INTO, without user or system variables, and without
--   functions that need this session or the primary (GET_LOCK, LAST_INSERT_ID(x),
--   NEXTVAL, ...); SHOW and everything else goes to the primary;
-- * the client is pinned to its current read-write connection once it creates session
--   state, until proxy.rw-pins' rule for that state releases it (the insert id: until a
--   statement that does not read it; temporary tables: until dropped; prepared
--   statements: until closed; others: the session): user variables, SET of session variables
--   to anything but constants, SET autocommit = 0, SET TRANSACTION (the next one only),
--   temporary tables, prepared statements (COM_STMT_PREPARE and PREPARE), GET_LOCK, LOCK
--   TABLES, sequences, CALL, HANDLER, a result with an insert id (LAST_INSERT_ID),
--   COM_CHANGE_USER, COM_SET_OPTION. COM_RESET_CONNECTION unpins it;
-- * settings do not pin: SET NAMES, SET CHARACTER SET and SET [SESSION] of session
--   variables to constants (what connectors send when they connect) run where the client
--   is and are replayed, in order, on every connection the client moves to;
-- * while the server reports a transaction (SERVER_STATUS_IN_TRANS) the client stays
--   where it is;
-- * FOUND_ROWS(), ROW_COUNT(), LAST_INSERT_ID(), @@warning_count, SHOW WARNINGS and
--   GET DIAGNOSTICS run on the connection of the statement before them;
-- * connections are switched only when a statement needs another kind of backend, not
--   after every result, so the statement above is still on that connection;
-- * USE db sent as SQL becomes a COM_INIT_DB, so the proxy tracks the default database.
--   Before a statement runs on a connection whose database differs, a COM_INIT_DB is
--   injected. If it fails (the database is missing on a replica), the client gets an ERR
--   that names the backend;
-- * a write is never sent to a read-only backend: if no read-write connection can be
--   had, the client gets an ERR that says so. Backend types are read for every
--   statement, so with --proxy-backend-roles=auto writes follow a switchover; a client
--   pinned on a backend that is no longer read-write gets an ERR at its next write and
--   is disconnected, to reconnect to the new primary (its session state is lost there);
-- * a read never goes to a stale replica (backends[i].stale: more than
--   --proxy-max-replication-lag behind, or its replication stopped or broken); with no
--   fresh replica to be had, it goes to the read-write backend;
-- * at disconnect, only a connection without session state and transaction goes back
--   to the pool. Any other is closed.
--
-- * with causal_reads, a read on a replica after the client's write first waits there for
--   that write's GTID (MASTER_GTID_WAIT), or goes to the primary after causal_reads_timeout;
--
-- Configuration (also through PROXY SET GLOBAL rwsplit.<option> = <value>, see
-- proxy.auto-config): min_idle_connections, max_idle_connections, is_debug,
-- causal_reads, causal_reads_timeout.

local chassis     = require("chassis")
local commands    = require("proxy.commands")
local lb          = require("proxy.balance")
local auto_config = require("proxy.auto-config")
local routes      = require("proxy.rw-classify")  -- which statements may go where
local rw_pins     = require("proxy.rw-pins")      -- what keeps a client where it is, and until when
local statements, tokens_of, classify = routes.statements, routes.tokens_of, routes.classify

local DEFAULTS = {
	min_idle_connections = 4,
	max_idle_connections = 8,
	is_debug = false,
	causal_reads = false,         -- read-your-writes: a read on a replica waits for the client's last write
	causal_reads_timeout = 1,     -- seconds a read waits on a replica before it goes to the primary
}
proxy.global.config.rwsplit = proxy.global.config.rwsplit or {}
local config = proxy.global.config.rwsplit
for k, v in pairs(DEFAULTS) do
	if config[k] == nil then config[k] = v end
end

-- Per client connection (the script runs from the top for each client)
local pins = rw_pins.new() -- why the client must stay on its connection (pins:reason())
local pinned = nil         -- pins:reason() as of the last command (nil: free to move)
local in_trans = false     -- the last result said a transaction is open
local client_db = nil      -- the default database as the client believes it to be
local pending = nil        -- what the command in flight changes: { db = ... }, { reset = true }
                           -- or { setting = key, sql = ... }
local settings = {}        -- the client's settings to replay: array of { key =, sql = }
local last_conn = nil      -- the server connection the previous statement ran on
local effects = nil        -- what the command in flight does to the pins (rw-classify's effects)
-- read-your-writes (causal_reads): the GTID of the client's last write, whether a write
-- ran since it was learnt, the connection it ran on, the replica connection that has it
local causal = { gtid = nil, stale = false, write_conn = nil, synced = nil }
local deferred = nil       -- the read waiting for the GTID query: { payload =, route =, is_init_db =, what = }
local waiting = nil        -- the read queued behind a MASTER_GTID_WAIT (same fields)
local wrote = false        -- the command in flight is a write on the primary

local ID_QUERY, ID_SYNC_DB, ID_SYNC_SET, ID_GTID, ID_WAIT = 1, 2, 3, 4, 5

-- To the chassis log, not stdout: stdout is gone with --daemon (MySQL Proxy printed it).
local function debug(fmt, ...)
	if config.is_debug then
		chassis.message(("[rw-splitting] " .. fmt):format(...))
	end
end

---------------------------------------------------------------------------------------------
-- Backends
---------------------------------------------------------------------------------------------

-- The backend the attached server connection belongs to (nil when none is attached). The
-- backend_ndx value alone is not proof: 0.8.5 remembered a number without switching.
local function attached()
	local server = proxy.connection.server
	if server == nil then return nil end
	local dst = server.dst
	local name = dst and dst.name
	local backends = proxy.global.backends
	local ndx = proxy.connection.backend_ndx
	if ndx > 0 and backends[ndx] and backends[ndx].dst.name == name then return ndx end
	for i = 1, #backends do
		if backends[i].dst.name == name then return i end
	end
	-- the server's address is spelled differently from the configured one (a host name)
	if ndx > 0 and backends[ndx] then return ndx end
	return nil
end

local function backend_type(i)
	local b = i and proxy.global.backends[i]
	return b and b.type
end

local function first_rw_up()
	local backends = proxy.global.backends
	for i = 1, #backends do
		local b = backends[i]
		if b.type == proxy.BACKEND_TYPE_RW and b.state ~= proxy.BACKEND_STATE_DOWN then return i end
	end
	return 0
end

local function name_of(i)
	local b = proxy.global.backends[i]
	return b and b.dst.name or ("#" .. tostring(i))
end


---------------------------------------------------------------------------------------------
-- Hooks
---------------------------------------------------------------------------------------------

-- Grow the pools: a new client logs in to the first backend (read-write ones first) whose
-- pool holds fewer than min_idle_connections idle connections; otherwise to a read-write
-- backend, taking a pooled connection there when one is idle.
function connect_server()
	local backends = proxy.global.backends
	local chosen, rw = 0, 0
	for pass = 1, 2 do
		local wanted = pass == 1 and proxy.BACKEND_TYPE_RW or proxy.BACKEND_TYPE_RO
		for i = 1, #backends do
			local b = backends[i]
			local pool = b.pool
			pool.min_idle_connections = config.min_idle_connections
			pool.max_idle_connections = config.max_idle_connections
			if b.type == wanted and b.state ~= proxy.BACKEND_STATE_DOWN then
				if rw == 0 and wanted == proxy.BACKEND_TYPE_RW then rw = i end
				if chosen == 0 and pool.users[""].cur_idle_connections < pool.min_idle_connections then
					chosen = i
				end
			end
		end
	end
	if chosen == 0 then chosen = rw end
	if chosen == 0 then return end  -- every backend is down: the proxy answers the client
	proxy.connection.backend_ndx = chosen
	debug("connect_server: backend %d (%s)", chosen, name_of(chosen))
	if proxy.connection.server then
		return proxy.PROXY_IGNORE_RESULT  -- a pooled connection: keep it
	end
end

-- After a successful login the connection goes to the pool, where this client (and
-- others of the same user) take connections from as their statements need them.
function read_auth_result(auth)
	if auth.packet:byte() == proxy.MYSQLD_PACKET_OK then
		proxy.connection.backend_ndx = 0
	end
end

local function err_response(message)
	proxy.queries:reset()
	proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = message, errcode = 1105, sqlstate = "HY000" }
	return proxy.PROXY_SEND_RESULT
end

-- Put the client on a connection of the kind `route` asks for; nil, or an error message.
local function place(route)
	local current = attached()
	if pinned or in_trans then
		-- (a prepared statement's COM_STMT_EXECUTE may write: only reads stay there)
		if pinned and current and route ~= "ro" and route ~= "any"
			and backend_type(current) ~= proxy.BACKEND_TYPE_RW then
			-- the session's state is on a server that no longer takes writes (a switchover,
			-- --proxy-backend-roles=auto): the client must start over on the new primary.
			-- (A transaction alone needs nothing: the server refuses its writes, and after
			-- its ROLLBACK the client is free to move.)
			proxy.connection.connection_close = true
			return ("(rw-splitting) backend %s is read-only now and this session's state "
				.. "(%s) is there: reconnect"):format(name_of(current), pinned)
		end
		if current then return nil end
		route = "rw"  -- should not happen: state without a connection
	end
	if route == "same" then
		if current then return nil end
		route = "rw"
	end
	if route == "any" then
		if current then return nil end
		route = "ro"
	end
	if route == "ro" then
		local b = current and proxy.global.backends[current]
		if b and b.type == proxy.BACKEND_TYPE_RO and b.state ~= proxy.BACKEND_STATE_DOWN
			and not b.stale then
			return nil
		end
		local ndx = lb.idle_ro()
		if ndx > 0 then
			proxy.connection.backend_ndx = ndx
			if backend_type(attached()) == proxy.BACKEND_TYPE_RO then return nil end
		end
		-- no replica connection to be had: a read may go to the primary
		current = attached()
	end
	if current and backend_type(current) == proxy.BACKEND_TYPE_RW then return nil end
	local ndx = lb.idle_failsafe_rw()
	if ndx == 0 then ndx = first_rw_up() end
	if ndx == 0 then
		return "(rw-splitting) no read-write backend is up"
	end
	proxy.connection.backend_ndx = ndx
	if backend_type(attached()) ~= proxy.BACKEND_TYPE_RW then
		return ("(rw-splitting) no idle connection to the read-write backend %s for user '%s'; "
			.. "retry, or raise rwsplit.min_idle_connections (PROXY SET GLOBAL)"):format(
			name_of(ndx), proxy.connection.client.username)
	end
	return nil
end

local function conn_key()
	local server = proxy.connection.server
	return server and (server.dst.name .. "#" .. tostring(server.thread_id))
end

-- Queue the client's command on the attached connection, after what that connection
-- needs first: its default database, the client's settings (a connection other than the
-- previous statement's may be another client's, which the proxy reset), and with
-- causal_reads the wait for the client's last write on a replica.
local function queue(payload, is_init_db, what)
	proxy.queries:append(ID_QUERY, payload, { resultset_is_needed = is_init_db or effects.stmt_prepare or false })
	local server = proxy.connection.server
	if not is_init_db and server and client_db ~= "" and server.default_db ~= client_db then
		proxy.queries:prepend(ID_SYNC_DB, string.char(proxy.COM_INIT_DB) .. client_db,
			{ resultset_is_needed = true })
	end
	local key = conn_key()
	if key and key ~= last_conn then
		for i = #settings, 1, -1 do
			proxy.queries:prepend(ID_SYNC_SET, string.char(proxy.COM_QUERY) .. settings[i].sql,
				{ resultset_is_needed = true })
		end
	end
	last_conn = key
	if config.causal_reads and causal.gtid and causal.gtid ~= "" and key and causal.synced ~= key
		and backend_type(attached()) == proxy.BACKEND_TYPE_RO then
		proxy.queries:prepend(ID_WAIT, string.char(proxy.COM_QUERY) .. ("SELECT MASTER_GTID_WAIT('%s', %s)")
			:format(causal.gtid, tostring(tonumber(config.causal_reads_timeout) or 0)), { resultset_is_needed = true })
		waiting = { payload = payload, is_init_db = is_init_db, what = what }
	end
end

-- Place the client for `route` and queue its command; nil, or the answer for an error.
local function place_and_queue(payload, route, is_init_db, what, write)
	local problem = place(route)
	if problem then
		debug("%s: %s", what, problem)
		return err_response(problem)
	end
	wrote = write
	queue(payload, is_init_db, what)
	debug("%s -> backend %s%s", what, name_of(attached()), pinned and (" (pinned: " .. pinned .. ")") or "")
	return nil
end

-- causal_reads: would this read leave the primary connection of a write whose GTID is not
-- known yet? Then that GTID is asked for first, on that connection.
local function needs_gtid(route)
	if not (config.causal_reads and causal.stale) or pinned or in_trans then return false end
	if route ~= "ro" and route ~= "any" then return false end
	local current = attached()
	return current ~= nil and backend_type(current) == proxy.BACKEND_TYPE_RW
end

function read_query(packet)
	local cmd = commands.parse(packet)
	local handled = auto_config.handle(cmd)
	if handled then return handled end

	if cmd.type == proxy.COM_QUIT then
		-- the client goes; its server connection stays for the pool (disconnect_client)
		proxy.response = { type = proxy.MYSQLD_PACKET_OK }
		return proxy.PROXY_SEND_RESULT
	end

	if client_db == nil then client_db = proxy.connection.client.default_db or "" end

	local stmts = cmd.type == proxy.COM_QUERY and statements(tokens_of(cmd.query)) or nil
	local route, pin, changes = classify(cmd, stmts)
	effects = routes.effects(cmd, stmts)
	local payload = packet

	-- USE db as SQL: send a COM_INIT_DB, which the proxy tracks (it does not parse SQL)
	local use = stmts and #stmts == 1 and stmts[1]
	if use and #use == 2 and use[1].token_name == "TK_SQL_USE" and use[2].token_name == "TK_LITERAL" then
		payload = string.char(proxy.COM_INIT_DB) .. use[2].text
		route, pin, changes = "same", nil, { db = use[2].text }
	end
	-- a setting beyond the 64th distinct one pins instead of being repeated on every move
	if changes and changes.setting and #settings >= 64 then
		local known = false
		for _, st in ipairs(settings) do known = known or st.key == changes.setting end
		if not known then pin, changes = "SET " .. changes.setting, nil end
	end
	local was = pinned
	pins:before(effects)
	local held = pins:reason()
	if was and not held then debug("unpinned (%s is released)", was) end
	if pin then pins:add(pin) end
	pinned = held  -- what place() must respect; a new pin starts where the statement runs
	-- session state is made on (and pins the client to) a read-write connection
	if pin and not held then route = "rw" end
	pending = changes
	local is_init_db = payload:byte() == proxy.COM_INIT_DB

	if needs_gtid(route) then
		-- the GTID of the client's last write, on the connection that wrote it (or, if
		-- the client moved since, the primary's binlog position, which includes it)
		deferred = { payload = payload, route = route, is_init_db = is_init_db, what = commands.pretty_print(cmd) }
		local sql = conn_key() == causal.write_conn and "SELECT @@last_gtid" or "SELECT @@global.gtid_binlog_pos"
		proxy.queries:append(ID_GTID, string.char(proxy.COM_QUERY) .. sql, { resultset_is_needed = true })
		return proxy.PROXY_SEND_QUERY
	end
	local answer = place_and_queue(payload, route, is_init_db, commands.pretty_print(cmd), route == "rw")
	pinned = pins:reason()
	if answer then return answer end
	if pin and not held then
		debug("pinned to backend %s: %s", name_of(attached()), pin)
	end
	return proxy.PROXY_SEND_QUERY
end

-- the message of an ERR packet
local function err_message(raw)
	return require("mysql.proto").from_err_packet(raw).errmsg
end

local function failed(res)
	if res.query_status == proxy.MYSQLD_PACKET_ERR then return true end
	local ok, raw = pcall(function() return res.raw end)
	return ok and raw ~= nil and raw:byte() == proxy.MYSQLD_PACKET_ERR
end

-- The first column of a buffered result's first row (nil when there is none).
local function first_value(res)
	for row in res.rows do return row[1] end
	return nil
end

function read_query_result(inj)
	local res = inj.resultset
	if inj.id == ID_SYNC_DB then
		if failed(res) then
			local ok, info = pcall(err_message, res.raw)
			return err_response(("(rw-splitting) cannot use database '%s' on backend %s: %s"):format(
				client_db, name_of(attached()), ok and info or "the server refused it"))
		end
		return proxy.PROXY_IGNORE_RESULT
	end
	if inj.id == ID_SYNC_SET then
		if failed(res) then
			local ok, info = pcall(err_message, res.raw)
			return err_response(("(rw-splitting) cannot repeat '%s' on backend %s: %s"):format(
				inj.query:sub(2), name_of(attached()), ok and info or "the server refused it"))
		end
		return proxy.PROXY_IGNORE_RESULT
	end
	if inj.id == ID_GTID then
		-- the client's last write's GTID: now the read may go to a replica that has it
		local d = deferred
		deferred = nil
		if not failed(res) then
			causal.gtid, causal.stale, causal.synced = first_value(res) or "", false, nil
		end
		local route = causal.stale and "rw" or d.route  -- no GTID: the primary has the write
		local answer = place_and_queue(d.payload, route, d.is_init_db, d.what, false)
		return answer or proxy.PROXY_IGNORE_RESULT
	end
	if inj.id == ID_WAIT then
		local key = conn_key()
		if not failed(res) and first_value(res) == "0" then
			causal.synced = key
			return proxy.PROXY_IGNORE_RESULT
		end
		-- the replica has not applied the client's write within causal_reads_timeout (or
		-- cannot tell): the read goes to the primary instead
		debug("backend %s has not applied %s within %ss: the read goes to a read-write backend",
			name_of(attached()), causal.gtid, tostring(config.causal_reads_timeout))
		local read = waiting
		proxy.queries:reset()
		local answer = place_and_queue(read.payload, "rw", read.is_init_db, read.what, false)
		return answer or proxy.PROXY_IGNORE_RESULT
	end
	if inj.id ~= ID_QUERY then return end

	local ok = not failed(res)
	in_trans = res.flags.in_trans and true or false
	pins:after(effects, ok, res, in_trans)
	local was = pinned
	pinned = pins:reason()
	if pinned and not was then
		debug("pinned to backend %s: %s", name_of(attached()), pinned)
	elseif was and not pinned then
		debug("unpinned (%s is released)", was)
	end
	if wrote then
		-- a write (or what may be one): its GTID, from the OK when the client tracks
		-- last_gtid (session_track_system_variables), else asked for at the next read
		local vars = res.session_variables
		local gtid = vars and vars.last_gtid
		if gtid then
			causal.gtid, causal.stale = gtid, false
		else
			causal.stale = true
		end
		causal.write_conn, causal.synced = conn_key(), nil
		wrote = false
	end
	local changes = pending
	pending = nil
	if changes and ok then
		if changes.db then client_db = changes.db end
		if changes.reset then
			pins:reset()
			pinned, in_trans, settings = nil, false, {}
		end
		if changes.setting then
			local replaced = false
			for _, st in ipairs(settings) do
				if st.key == changes.setting then st.sql, replaced = changes.sql, true end
			end
			if not replaced then settings[#settings + 1] = { key = changes.setting, sql = changes.sql } end
		end
	end
end

-- Only a connection without session state goes back to the pool; any other is closed
-- (a pooled connection is reset before another client gets it, but GET_LOCK locks,
-- for one, would be held until then).
function disconnect_client()
	if proxy.connection.server and not pinned and not in_trans then
		proxy.connection.backend_ndx = 0
	end
end
