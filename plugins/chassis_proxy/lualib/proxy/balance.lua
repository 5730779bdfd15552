-- proxy.balance: pick a backend that has idle pooled connections for this client.
--
--   local lb = require("proxy.balance")
--   function connect_server()
--     local ndx = lb.idle_failsafe_rw()
--     if ndx > 0 then proxy.connection.backend_ndx = ndx end
--   end
--
-- Both functions look at proxy.global.backends and at
-- backends[i].pool.users[<client's username>].cur_idle_connections; they return a 1-based
-- backend index, or 0 when no backend qualifies (as MySQL Proxy 0.8's). A backend that is
-- DOWN (or offline, which scripts see as DOWN) is never chosen. In connect_server the
-- username is not known yet (""), which the pool answers with "any user" (section 7.5 of
-- the reference). `username` is an optional argument (ours) to ask for another user.

local M = {
	_DESCRIPTION = "choose backends with idle pooled connections (chassis, MySQL Proxy 0.8 names)",
}

local function client_username()
	local conn = proxy.connection
	local client = conn and conn.client
	return (client and client.username) or ""
end

local function idle_for(backend, username)
	local pool = backend.pool
	if pool == nil then return 0 end
	local user = pool.users[username]
	return (user and user.cur_idle_connections) or 0
end

--- The first read-write backend that is not DOWN and has an idle connection; 0 if none.
function M.idle_failsafe_rw(username)
	username = username or client_username()
	local backends = proxy.global.backends
	for i = 1, #backends do
		local b = backends[i]
		if b.type == proxy.BACKEND_TYPE_RW and b.state ~= proxy.BACKEND_STATE_DOWN
			and idle_for(b, username) > 0 then
			return i
		end
	end
	return 0
end

--- Among read-only backends that are not DOWN, not stale (ours: a replica that lags more
-- than --proxy-max-replication-lag, or whose replication is stopped) and have an idle
-- connection, the one with the fewest connected clients (the lowest index on a tie); 0
-- if none.
function M.idle_ro(username)
	username = username or client_username()
	local backends = proxy.global.backends
	local best, best_clients = 0, nil
	for i = 1, #backends do
		local b = backends[i]
		if b.type == proxy.BACKEND_TYPE_RO and b.state ~= proxy.BACKEND_STATE_DOWN
			and not b.stale and idle_for(b, username) > 0 then
			local clients = b.connected_clients
			if best_clients == nil or clients < best_clients then
				best, best_clients = i, clients
			end
		end
	end
	return best
end

return M
