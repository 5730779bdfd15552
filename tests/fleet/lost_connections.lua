-- sysbench 1.0 test for the fleet tests: point selects on sbtest1, where a thread whose
-- connection is lost counts it and connects again (through the balancer: to a live
-- instance). sysbench's own answer, --mysql-ignore-errors with its reconnect, crashes
-- with Debian's libmariadb 3, and without it one lost connection ends the whole run.
-- Each thread prints "thread N lost its connection K time(s)" at its end.

sysbench.cmdline.options = {
   table_size = {"Number of rows in sbtest1", 1000},
}

function thread_init()
   drv = sysbench.sql.driver()
   con = drv:connect()
   lost = 0
end

function event()
   local id = sysbench.rand.default(1, sysbench.opt.table_size)
   local ok = pcall(con.query, con, "SELECT c FROM sbtest1 WHERE id=" .. id)
   if not ok then
      lost = lost + 1
      con = drv:connect()
   end
end

function thread_done()
   -- one write per line: print() writes its pieces apart, and threads end together
   io.stdout:write(string.format("thread %d lost its connection %d time(s)\n", sysbench.tid, lost))
   con:disconnect()
end
