-- The connect-heavy run of scripts/bench (the `connect` workload): what PHP-style
-- applications do. Each event connects, runs `SELECT 1`, and quits (COM_QUIT), so
-- sysbench's events per second are logins per second.
--
--   sysbench scripts/bench-connect.lua --db-driver=mysql --mysql-host=... run

function thread_init()
	drv = sysbench.sql.driver()
end

function event()
	local con = drv:connect()
	con:query("SELECT 1")
	con:disconnect()
end
