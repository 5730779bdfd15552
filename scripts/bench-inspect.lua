-- The Lua run of scripts/bench (`scripts/bench --lua` without a file).
--
-- read_query looks at every client command and returns nothing, so each one takes the
-- scripted path (the hook is called, the response is followed to its end) and goes to
-- the server unchanged: the figure is the cost of having a script at all. read_auth
-- does nothing either: the connect workload's logins pay for a login hook.
function read_auth()
end

function read_query(packet)
	if packet:byte() == proxy.COM_QUERY then
	end
end
