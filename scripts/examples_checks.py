"""What each of MySQL Proxy 0.8.5's ``examples/tutorial-*.lua`` says it does, checked through chassis.

One function per example, derived from the script's comments (read the script beside its
check). Each starts the example with :meth:`Lab.start`, drives it with real clients and
raises :class:`CheckFailed` when the client or the script's output is not what the
comments say. It returns a note for the result line: where the example cannot do what its
comments say even on MySQL Proxy 0.8.5, the note says so and the check asserts what 0.8.5
did instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pymysql
from examples import Lab, Run, expect, mysql_error


def _cli_ok(run: Run, sql: str, *args: str) -> str:
    """The mariadb CLI's output for *sql*, which must succeed."""
    done = run.cli(sql, *args)
    errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or done.stderr.splitlines()
    expect(done.returncode == 0, f"the client's {sql!r} failed: {' '.join(errors)[-300:]}")
    return done.stdout


def _prepared_connection(run: Run, **kwargs: Any) -> Any:
    """mysql-connector-python (pure Python): it speaks the binary protocol of prepared statements."""
    import mysql.connector

    return mysql.connector.connect(host="127.0.0.1", port=run.port, user="root", password="",
                                   use_pure=True, ssl_disabled=True, **kwargs)


def check_basic(lab: Lab) -> str:
    """read_query sees each COM_QUERY before the server: it prints it; the query goes on."""
    run = lab.start("tutorial-basic")
    out = _cli_ok(run, "SELECT 1 AS one; SELECT 'two' AS two", "--database=test")
    expect(out == "one\n1\ntwo\ntwo\n", f"the client got {out!r}")
    run.wait_printed(r"^we got a normal query: SELECT 1 AS one$")
    run.wait_printed(r"^we got a normal query: SELECT 'two' AS two$")
    return ""


def check_constants(lab: Lab) -> str:
    """The version assert passes; each query prints itself, PROXY_VERSION in hex and _VERSION."""
    run = lab.start("tutorial-constants")
    expect(_cli_ok(run, "SELECT 42 AS n") == "n\n42\n", "the query did not reach the server unchanged")
    out = run.wait_printed(r"^lua is: ")
    expect(re.search(r"^get got a Query: SELECT 42 AS n\nwe are: 00805\nlua is: Lua 5\.1$", out, re.M),
           f"printed {out!r}, not the query, 'we are: 00805' and 'lua is: Lua 5.1'")
    return ""


def check_inject(lab: Lab) -> str:
    """Each query goes to the server with an injected SELECT NOW() after it; NOW()'s rows
    are printed and dropped: the client sees only its own result, also when it quits at once."""
    run = lab.start("tutorial-inject")
    for _ in range(3):  # the CLI sends its last query and quits at once
        out = _cli_ok(run, "SELECT 'mine' AS m; SELECT 2 AS two")
        expect(out == "m\nmine\ntwo\n2\n", f"the client got {out!r}, not only its own results")
    with run.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 'own' AS own")
        expect([d[0] for d in cur.description] == ["own"] and cur.fetchall() == (("own",),),
               "PyMySQL did not get only its own result")
    # 7 queries of ours (PyMySQL adds a SET NAMES): each one's NOW() is printed
    out = run.wait_printed(r"^injected query returned: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", count=7)
    queries = out.count("we got a normal query: ")
    out = run.wait_printed(r"^injected query returned: ", count=queries)
    expect(out.count("injected result-set: id = 1\n") == out.count("injected result-set: id = 2\n") == queries,
           f"not every one of the {queries} queries and its SELECT NOW() reached read_query_result")
    return ""


def check_keepalive(lab: Lab) -> str:
    """A pool of min_idle_connections (4) server connections is built up and kept: later
    clients reuse an idle one; each statement runs in the client's default db; a
    transaction keeps its connection; beyond max_idle_connections (8) idle,
    disconnect_client closes one per departing client."""
    run = lab.start("tutorial-keepalive")
    ids = []
    for _ in range(8):
        out = _cli_ok(run, "SELECT CONNECTION_ID(); SELECT DATABASE()", "-N", "--database=test")
        conn_id, db = out.split()
        expect(db == "test", f"the client's default db was not synced: DATABASE() = {db}")
        ids.append(int(conn_id))
    server_side = _server_connections(lab, "test", 5)
    built = len(set(ids[:5]))
    # 0.8.5 too: connect_server's backend_ndx = 1 takes an idle connection before it counts
    # them, so a fifth one is opened before the pool counts as full
    expect(built == 5 and server_side == 5,
           f"the pool was not built to min_idle_connections + 1 (as on 0.8.5): {built} connections opened,"
           f" {server_side} on the server")
    expect(set(ids[5:]) <= set(ids[:5]), f"later clients did not reuse idle connections: {ids}")
    run.wait_printed(r"^  using pooled connection from: 1$", count=3)
    lab.db.sql("CREATE TABLE test.examples_keepalive (a INT) ENGINE=InnoDB")
    try:
        with run.connect(database="test") as a, run.connect(database="test") as b:
            run.rows(a, "BEGIN")
            run.rows(a, "INSERT INTO examples_keepalive VALUES (1)")
            expect(run.rows(b, "SELECT COUNT(*) FROM examples_keepalive") == [(0,)], "another client saw the row")
            expect(run.rows(a, "SELECT COUNT(*) FROM examples_keepalive") == [(1,)],
                   "the transaction lost its connection between statements")
            run.rows(a, "ROLLBACK")
    finally:
        lab.db.sql("DROP TABLE test.examples_keepalive")
    # twelve clients in a transaction each hold a connection; once they are gone the pool
    # holds 12 + idle ones, and disconnect_client closes one per client beyond max_idle (8)
    # (each logs in and begins in turn: a statement that finds no idle connection of its
    # user gets "I have no server backend", from the script's read_query, 0.8.5 too)
    holders: list[Any] = []
    try:
        for _ in range(12):
            holders.append(run.connect(database="test"))
            run.rows(holders[-1], "BEGIN")
        held = {run.rows(conn, "SELECT CONNECTION_ID()")[0][0] for conn in holders}
        expect(len(held) == 12, f"12 clients in a transaction shared {len(held)} connections")
        for conn in holders:
            run.rows(conn, "COMMIT")
    finally:
        for conn in holders:
            conn.close()
    run.wait_printed(r"^\[disconnect_client\]$", count=22)
    out = run.wait_printed(r"^  \[1\] closing connection, idling: 9$")
    expect(_server_connections(lab, "test", 8) == 8, "the pool did not shrink to max_idle_connections (8)")
    expect(len(re.findall(r"^  \[1\] closing connection, idling: \d+$", out, re.M)) >= 4,
           "disconnect_client closed too few idle connections")
    return "its pool holds min_idle_connections + 1 (5) connections, as on 0.8.5"


def _server_connections(lab: Lab, db: str, want: int, timeout: float = 10.0) -> int:
    """How many connections the server has in *db*, once that is *want* (or the timeout passed):
    a connection the proxy closes leaves the server's process list a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        have = len(lab.db.sql("SELECT id FROM information_schema.processlist WHERE db = %s", (db,)))
        if have == want or time.monotonic() > deadline:
            return have
        time.sleep(0.05)


def check_monitor(lab: Lab) -> str:
    """read_query queues a SELECT NOW() but does not return PROXY_SEND_QUERY: 0.8.5 discards
    the queue with a critical line, sends the client's query, and read_query_result never dumps."""
    lab.allowed_critical.append(r"proxy\.queries has 1 entries but the hook did not return")
    run = lab.start("tutorial-monitor")
    out = _cli_ok(run, "SELECT 1 AS one; SELECT 2 AS two")
    expect(out == "one\n1\ntwo\n2\n", f"the client got {out!r}")
    run.wait_printed(r"^inject monitor query into backend # 1$", count=3)  # two queries and COM_QUIT
    expect("read query result, dumping" not in run.printed(), "read_query_result ran for a discarded injection")
    expect(re.search(r"\(critical\).*they are discarded", run.log_text()), "the discarded queue was not logged")
    return ("as on 0.8.5: read_query queues its monitor query without returning PROXY_SEND_QUERY,"
            " so it is discarded (a critical line) and read_query_result never dumps")


def check_packets(lab: Lab) -> str:
    """Every command is queued as an injection, and read_query_result dumps the connection,
    the query packet, the raw result, its flags, times, an ERR's code, state and message,
    a prepared statement's id and parameters, and the rows."""
    run = lab.start("tutorial-packets")
    out = _cli_ok(run, "SELECT 1 AS one, NULL AS n", "--database=test")
    expect(out == "one\tn\n1\tNULL\n", f"the client got {out!r}")
    done = run.cli("SELECT * FROM nowhere", "--database=test")
    expect("ERROR 1146 (42S02)" in done.stderr, f"the client did not get the server's error: {done.stderr!r}")
    conn = _prepared_connection(run)
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT ? + ?", (1, 2))
    expect(cur.fetchall() == [(3,)], "the prepared statement's result differs")
    cur.close()
    conn.close()
    out = run.wait_printed(r"^\| \| prepared-query = SELECT \? \+ \?$")
    run.wait_printed(r"^\| \| row\[0\] = \{ 3 \}$")
    out = run.printed()
    for pattern in (r"^\| backend\[ndx\] = 1$", rf"^\| address = {re.escape(lab.db.address)}$",
                    r"^\| default-db = test$", r"^\| thread-id = \d+$",
                    r'^\| \| query = "SELECT 1 AS one, NULL AS n"$', r"^\| query\.packet = 03 53 45 4c 45 43 54 ",
                    r"^\| result\.packet = 02$", r"^\| result\.flags = \{ in_trans = false, auto_commit = true, ",
                    r"^\| query_time = \d+us$", r"^\| response_time = \d+us$", r"^\| \| num-cols = 2$",
                    r"^\| \| row\[0\] = \{ 1 \}$", r"^\| result\.err\.code = 1146$",
                    r'^\| result\.err\.sql_state = "42S02"$', r"^\| result\.err\.msg = \"Table 'test\.nowhere' doesn't",
                    r"^\| \| command = COM_STMT_PREPARE$", r"^\| \| num-params = 2$",
                    r"^\| \| command = COM_STMT_EXECUTE$", r"^\| \| stmt-id = \d+$"):
        expect(re.search(pattern, out, re.M), f"nothing printed matches {pattern!r}")
    return ("its row dump starts at fields[0] (fields are 1-based, in 0.8.5 too): it names no field"
            " and shows each row's first column only")


def check_prep_stmts(lab: Lab) -> str:
    """The prepared statements' text, id, columns and parameters are printed from their packets
    (mysql.proto's from_stmt_prepare/_ok/execute/close_packet); the client's results are unchanged."""
    run = lab.start("tutorial-prep-stmts")
    conn = _prepared_connection(run)
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT ? + ?, ?", (1, 2, "x"))
    expect(cur.fetchall() == [(3, "x")], "the prepared statement's result differs")
    cur.close()
    cur = conn.cursor(prepared=True)
    cur.execute("SELECT CONCAT(?, ?)", ("a", None))
    expect(cur.fetchall() == [(None,)], "the second prepared statement's result differs")
    cur.close()
    plain = conn.cursor()
    plain.execute("SHOW SESSION STATUS LIKE 'Com_stmt_close'")
    closed = int(plain.fetchall()[0][1])
    conn.close()
    expect(closed == 2, f"the server closed {closed} statements, not the client's 2 (COM_STMT_CLOSE went astray)")
    out = run.wait_printed(r"^ \[2\] nil \(type = 6\)$")
    expected = ("> PREPARE: SELECT ? + ?, ?\n"
                "< PREPARE: stmt-id = {a} (resultset-cols = 2, params = 3)\n"
                "> EXECUTE: stmt-id = {a}\n [1] 1 (type = 1)\n [2] 2 (type = 1)\n [3] x (type = 254)\n"
                "> PREPARE: SELECT CONCAT(?, ?)\n"
                "< PREPARE: stmt-id = {b} (resultset-cols = 1, params = 2)\n"
                "> EXECUTE: stmt-id = {b}\n [1] a (type = 254)\n [2] nil (type = 6)\n")
    ids = re.findall(r"^< PREPARE: stmt-id = (\d+)", out, re.M)
    expect(len(ids) == 2 and expected.format(a=ids[0], b=ids[1]) in out, f"printed {out!r}")
    expect("> CLOSE" not in out, "read_query_result ran for a COM_STMT_CLOSE (it has no answer)")
    return ("as on 0.8.5: COM_STMT_CLOSE has no answer, so read_query_result never sees it and"
            " '> CLOSE' is never printed")


def check_query_time(lab: Lab) -> str:
    """Each query's query-time (to the first packet) and response-time (to the last) are printed in ms."""
    run = lab.start("tutorial-query-time")
    expect(_cli_ok(run, "SELECT SLEEP(0.3) AS s; SELECT 1 AS one") == "s\n0\none\n1\n", "the client's results differ")
    out = run.wait_printed(r"^response-time: ", count=2)
    times = re.findall(r"^we got a normal query: (.*)\nquery-time: ([\d.]+)ms\nresponse-time: ([\d.]+)ms$", out, re.M)
    expect([t[0] for t in times] == ["SELECT SLEEP(0.3) AS s", "SELECT 1 AS one"], f"printed {out!r}")
    for sql, query_ms, response_ms in times:
        expect(0 < float(query_ms) <= float(response_ms), f"{sql}: query-time {query_ms} > response-time {response_ms}")
    expect(300 <= float(times[0][1]) < 30_000, f"SLEEP(0.3) took {times[0][1]} ms")
    return ""


def check_resultset(lab: Lab) -> str:
    """'show querycounter' answers a result set of the proxy's own (queries of all
    connections, of this one); 'show myerror' an ERR 'my first error'; others go to the server."""
    run = lab.start("tutorial-resultset")
    with run.connect() as a, run.connect() as b:
        with a.cursor() as cur:
            cur.execute("SHOW querycounter")
            expect([d[0] for d in cur.description] == ["global_query_counter", "query_counter"]
                   and all(d[1] == pymysql.constants.FIELD_TYPE.LONG for d in cur.description),
                   f"the result's fields are {cur.description}")
            g1, l1 = (int(v) for v in cur.fetchall()[0])
        expect(run.rows(a, "SELECT 'to the server' AS q") == [("to the server",)], "a plain query did not pass")
        (g2, l2), = run.rows(a, "  show   QUERYCOUNTER")
        expect((int(g2) - g1, int(l2) - l1) == (2, 2), f"counters went from {(g1, l1)} to {(g2, l2)}, not +2 each")
        (g3, l3), = run.rows(b, "show querycounter")
        expect(int(g3) > int(l3) and int(g3) >= int(g2) + 1, f"the second connection's counters {(g3, l3)} are not"
               f" global (> {g2}) and its own")
        code, message = mysql_error(lambda: run.rows(b, "show myerror"))
        expect(message == "my first error", f"show myerror gave ({code}, {message!r})")
    return ""


def check_rewrite(lab: Lab) -> str:
    """'ls [db]' becomes SHOW TABLES [FROM db], 'who' SHOW PROCESSLIST, 'cd db' a COM_INIT_DB."""
    lab.db.sql("CREATE TABLE test.examples_listed (a INT)")
    try:
        run = lab.start("tutorial-rewrite")
        lines = _cli_ok(run, "cd test; SELECT DATABASE(); ls; ls mysql; who", "-N").splitlines()
    finally:
        lab.db.sql("DROP TABLE test.examples_listed")
    expect(lines[:2] == ["test", "examples_listed"], f"cd/ls gave {lines[:2]}")
    expect("user" in lines[2:-1], "'ls mysql' did not list mysql's tables")
    expect(re.match(r"\d+\troot\t\S+\ttest\tQuery\t\d+\t\S+\tSHOW PROCESSLIST\t", lines[-1]),
           f"'who' did not give the process list: {lines[-1]!r}")
    run.wait_printed(r"^we got a normal query: who$")
    return ""


def check_routing(lab: Lab) -> str:
    """connect_server prints the client's source and destination, read_handshake the server
    connection's; then the client is refused with ERR 'done'."""
    run = lab.start("tutorial-routing")
    code, message = mysql_error(lambda: run.connect(bind_address="127.0.0.2"))
    expect(message == "done", f"the client got ({code}, {message!r}), not 'done'")
    out = run.wait_printed(r"^server dst: ")
    host, port = lab.db.address.rsplit(":", 1)
    for pattern in (r"^client src: 127\.0\.0\.2:\d+ \(type = 2, address = 127\.0\.0\.2, port = \d+$",
                    rf"^client dst: 127\.0\.0\.1:{run.port} \(type = 2, address = 127\.0\.0\.1, port = {run.port}$",
                    r"^server src: 127\.0\.0\.1:\d+ \(type = 2, address = 127\.0\.0\.1, port = \d+$",
                    rf"^server dst: {re.escape(lab.db.address)} \(type = 2, address = {host}, port = {port}$"):
        expect(re.search(pattern, out, re.M), f"nothing printed matches {pattern!r}: {out!r}")
    return ""


def check_scramble(lab: Lab) -> str:
    """read_auth prints the challenge and the client's answer; user 'replace' with password
    'me' is logged in as root with password 'secret' (mysql.password, mysql.proto)."""
    run = lab.start("tutorial-scramble")
    admin = lab.db.connect()
    roots = ("'root'@'localhost'", "'root'@'127.0.0.1'")
    try:
        with admin.cursor() as cur:
            for account in roots:  # the mapping's target: root with the password 'secret'
                cur.execute(f"SET PASSWORD FOR {account} = PASSWORD('secret')")
        with run.connect("replace", password="me") as conn:
            expect(run.rows(conn, "SELECT CURRENT_USER()") == [("root@localhost",)],
                   "'replace' is not logged in as root")
        code, _ = mysql_error(lambda: run.connect("replace", password="not-me"))
        expect(code == 1045, f"'replace' with a wrong password got {code}, not 1045")
        code, _ = mysql_error(lambda: run.connect("root", password=""))
        expect(code == 1045, "root logged in without its password")
    finally:
        with admin.cursor() as cur:
            for account in roots:
                cur.execute(f"SET PASSWORD FOR {account} = PASSWORD('')")
        admin.close()
    out = run.wait_printed(r'^for challenge ".*" the client sent ', count=3)
    expect(re.search(r'^for challenge ".+" the client sent ""$', out, re.M),
           "the login without a password was not printed")
    return ""


def check_states(lab: Lab) -> str:
    """Each state prints a line: connect_server, read_handshake (server data), read_auth
    (login data), read_auth_result (ok/failed), read_query; a non-local client and user
    'evil' are refused."""
    lab.allowed_critical.append(r"proxy\.queries has 1 entries but the hook did not return")
    run = lab.start("tutorial-states")
    out = _cli_ok(run, "SELECT CONNECTION_ID() AS id; SELECT 1", "--database=test")
    conn_id = out.splitlines()[1]
    expect(out.splitlines()[2:] == ["1", "1"], f"'SELECT 1' gave {out!r}")
    out = run.wait_printed(r"^    query: SELECT 1$")
    flow = (r"--> a client really wants to talk to a server\n<-- let's send him some information about us\n"
            rf"    mysqld-version: \d+\n    thread-id     : {conn_id}\n    scramble-buf  : \".*\"\n"
            rf"    server-addr   : {re.escape(lab.db.host)}\n    client-addr   : 127\.0\.0\.1\n"
            r"--> there, look, the client is responding to the server auth packet\n    username      : root\n"
            r"    password      : \"\"\n    default_db    : test\n<-- auth ok\n--> someone sent us a query\n"
            r"    query: SELECT CONNECTION_ID\(\) AS id\n--> someone sent us a query\n    query: SELECT 1\n")
    expect(re.search(flow, out), f"the states were not printed in order: {out!r}")
    code, message = mysql_error(lambda: run.connect("evil", password="x"))
    expect(message == "evil logins are not allowed", f"user evil got ({code}, {message!r})")
    code, _ = mysql_error(lambda: run.connect("native", password="wrong"))
    expect(code == 1045, f"a wrong password got {code}")
    run.wait_printed(r"^<-- auth failed$")
    code, message = mysql_error(lambda: run.connect(bind_address="127.0.0.2"))
    expect(message == "only local connects are allowed", f"a client from 127.0.0.2 got ({code}, {message!r})")
    run.wait_printed(r"^we don't like this client$")
    return ("as on 0.8.5: read_query queues 'SELECT 1' without returning PROXY_SEND_QUERY, so the queue is"
            " discarded (a critical line), the query goes to the server and the raw ERR of read_query_result is"
            " never sent")


def check_tokenize(lab: Lab) -> str:
    """Each query is split by proxy.tokenizer (the source's lib/proxy/tokenizer.lua on
    mysql.tokenizer): every token is printed with its name, then the normalized query."""
    run = lab.start("tutorial-tokenize")
    with run.connect() as conn:
        expect(run.rows(conn, "SELECT 'it''s' AS s, 42 FROM DUAL WHERE 1 = 1") == [("it's", 42)],
               "the query did not reach the server unchanged")
    out = run.wait_printed(r"^normalized query: ")
    tokens = ("1:  { TK_SQL_SELECT, SELECT }\n2:  { TK_STRING, \"it's\" }\n3:  { TK_SQL_AS, AS }\n"
              "4:  { TK_LITERAL, s }\n5:  { TK_COMMA, , }\n6:  { TK_INTEGER, 42 }\n7:  { TK_SQL_FROM, FROM }\n"
              "8:  { TK_SQL_DUAL, DUAL }\n9:  { TK_SQL_WHERE, WHERE }\n10:  { TK_INTEGER, 1 }\n11:  { TK_EQ, = }\n"
              "12:  { TK_INTEGER, 1 }\nnormalized query: SELECT ? AS `s` , ? FROM DUAL WHERE ? = ? \n")
    expect(tokens in out, f"printed {out!r}")
    return ""


def check_union(lab: Lab) -> str:
    """A SELECT is sent twice; the rows of both results are merged into one result set
    (with the second's fields) for the client; other statements pass unchanged."""
    run = lab.start("tutorial-union")
    out = _cli_ok(run, "SELECT 1 AS a UNION SELECT 2; SHOW DATABASES LIKE 'test'")
    expect(out == "a\n1\n2\n1\n2\nDatabase (test)\ntest\n", f"the client got {out!r}")
    with run.connect() as conn, conn.cursor() as cur:
        cur.execute("select 'x' AS s, 7 AS n")
        expect(cur.fetchall() == (("x", 7), ("x", 7)) and [d[0] for d in cur.description] == ["s", "n"],
               "PyMySQL did not get the merged result")
    return ("a failing SELECT gets ERR 1105 '(lua) handling proxy.response failed' (its merged result has no"
            " fields); 0.8.5 raised in read_query_result and passed the server's ERR")


def check_warnings(lab: Lab) -> str:
    """A query with warnings is followed by an injected SHOW WARNINGS whose rows are printed
    and dropped: the client sees only its own result, also when it quits at once."""
    run = lab.start("tutorial-warnings")
    for _ in range(3):  # the CLI sends its last query and quits at once
        out = _cli_ok(run, "SELECT 1 AS plain; SELECT 1/0 AS d; SELECT CAST('x' AS SIGNED) AS c")
        expect(out == "plain\n1\nd\nNULL\nc\n0\n", f"the client got {out!r}")
    out = run.wait_printed(r"^warning: \[1292\] Warning$", count=3)
    out = run.wait_printed(r"^warning: \[1365\] Warning$", count=3)
    expect(out.count("Query had warnings: SELECT 1/0 AS d\n") == 3, "not every SELECT 1/0 was reported")
    expect(out.count("Query had warnings: SELECT CAST('x' AS SIGNED) AS c\n") == 3, "not every CAST was reported")
    expect("SELECT 1 AS plain" not in out, "a query without warnings was reported")
    return "it prints each warning's code and level (row[2], row[1]), not its message, as on 0.8.5"


CHECKS: dict[str, Callable[[Lab], str]] = {
    "tutorial-basic": check_basic,
    "tutorial-constants": check_constants,
    "tutorial-inject": check_inject,
    "tutorial-keepalive": check_keepalive,
    "tutorial-monitor": check_monitor,
    "tutorial-packets": check_packets,
    "tutorial-prep-stmts": check_prep_stmts,
    "tutorial-query-time": check_query_time,
    "tutorial-resultset": check_resultset,
    "tutorial-rewrite": check_rewrite,
    "tutorial-routing": check_routing,
    "tutorial-scramble": check_scramble,
    "tutorial-states": check_states,
    "tutorial-tokenize": check_tokenize,
    "tutorial-union": check_union,
    "tutorial-warnings": check_warnings,
}
