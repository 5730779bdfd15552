"""rw-splitting.lua: where each statement runs, which session state pins a client to its
read-write connection, default-database sync, and pooling, against the pool stand-in of
:mod:`tests.lualib.pool_standin` (the real pool and real servers come with issue 6)."""

from __future__ import annotations

import struct

import pytest
from chassis_mysql.packets import ERR
from chassis_proxy.hooks import BackendState, BackendType, Decision
from chassis_proxy.lua import LuaScriptHost

from tests.lualib.harness import LUALIB, Env
from tests.lualib.pool_standin import Session, World

RW, RO = BackendType.RW, BackendType.RO
SCRIPT = LUALIB / "rw-splitting.lua"
PRIMARY, REPLICA = "10.0.0.1:3306", "10.0.0.1:3307"


class Setup:
    def __init__(self, env: Env, *kinds: BackendType) -> None:
        self.world = World(*(kinds or (RW, RO)))
        self.host: LuaScriptHost = env.host_for(SCRIPT)
        self.sessions = 0

    def client(self, login: bool = True, **kw: str) -> Session:
        self.sessions += 1
        s = Session(self.world, self.host, self.sessions, **kw)
        if login:
            s.login()
        return s


@pytest.fixture
def setup(env: Env) -> Setup:
    """A primary and a replica whose pools hold idle connections of user app."""
    s = Setup(env)
    s.world.add_idle(1, count=4)
    s.world.add_idle(2, count=4)
    return s


def test_reads_go_to_the_replica_and_writes_to_the_primary(setup: Setup) -> None:
    c = setup.client()
    assert c.where("SELECT * FROM items")[0] == REPLICA
    assert c.where("INSERT INTO items VALUES (1)")[0] == PRIMARY
    assert c.where("select name from items where id = 1")[0] == REPLICA
    assert c.where("UPDATE items SET n = 2")[0] == PRIMARY
    assert c.where("(SELECT 1) UNION (SELECT 2)")[0] == REPLICA
    assert c.where("DELETE FROM items")[0] == PRIMARY


@pytest.mark.parametrize(
    "sql",
    [
        "SHOW TABLES",
        "SELECT * FROM items FOR UPDATE",
        "SELECT * FROM items LOCK IN SHARE MODE",
        "SELECT * FROM items INTO OUTFILE '/tmp/x'",
        "SELECT @@read_only",
        "SELECT RELEASE_LOCK('x')",
        "SELECT 1; INSERT INTO log VALUES (1)",
        "EXPLAIN SELECT * FROM items",
        "/*!40101 SET NAMES utf8 */",
    ],
)
def test_reads_that_need_the_primary_go_there(setup: Setup, sql: str) -> None:
    c = setup.client()
    assert c.where(sql)[0] == PRIMARY


def test_a_transaction_stays_on_one_primary_connection(setup: Setup) -> None:
    c = setup.client()
    begin = c.where("BEGIN")
    assert begin[0] == PRIMARY
    assert c.where("SELECT * FROM items") == begin
    assert c.where("UPDATE items SET n = 1") == begin
    assert c.where("SELECT * FROM items") == begin
    assert c.where("COMMIT") == begin
    assert c.where("SELECT * FROM items")[0] == REPLICA


@pytest.mark.parametrize(
    ("setup_sql", "reason"),
    [
        ("SET @a = NOW()", "SET @a"),
        ("SELECT @a := 1", "user variables"),
        ("SELECT id INTO @x FROM items LIMIT 1", "user variables"),
        ("SET SESSION sql_mode = CONCAT('ANSI', '')", "SET"),
        ("SELECT GET_LOCK('job', 10)", "GET_LOCK"),
        ("DO GET_LOCK('job', 10)", "GET_LOCK"),
        ("CALL refresh_cache()", "stored procedure"),
        ("SELECT 1; SET @b = 2", "SET @B"),
    ],
)
def test_session_state_pins_the_client_to_its_primary_connection(
    setup: Setup, env: Env, setup_sql: str, reason: str
) -> None:
    c = setup.client()
    c.send(b"\x03PROXY SET GLOBAL rwsplit.is_debug = true")
    home = c.where(setup_sql)
    assert home[0] == PRIMARY
    # is_debug goes to the chassis log (stdout is gone with --daemon)
    assert any(f"[rw-splitting] pinned to backend {PRIMARY}: {reason}" in line
               for line in env.lines()), env.lines()
    # every later statement, reads included, runs on the same server connection
    assert c.where("SELECT * FROM items") == home
    assert c.where("SELECT @a") == home
    assert c.where("INSERT INTO items VALUES (2)") == home
    assert c.where("SELECT * FROM items") == home


@pytest.mark.parametrize(
    ("setup_sql", "reason", "keep", "release"),
    [
        ("INSERT INTO items VALUES (AUTO)", "LAST_INSERT_ID",
         ["SELECT LAST_INSERT_ID()", "SELECT @@identity", "INSERT INTO log VALUES (LAST_INSERT_ID())"], []),
        ("SELECT LAST_INSERT_ID(42)", "LAST_INSERT_ID(expr)", ["SELECT LAST_INSERT_ID()"], []),
        ("SELECT NEXTVAL(seq)", "sequence", ["SELECT LASTVAL(seq)", "SELECT PREVIOUS VALUE FOR seq"], []),
        ("SELECT NEXT VALUE FOR seq", "sequence", [], []),
        ("CREATE TEMPORARY TABLE t (a INT)", "temporary table",
         ["SELECT * FROM items", "CREATE TEMPORARY TABLE IF NOT EXISTS db.u (a INT)", "DROP TEMPORARY TABLE t"],
         ["DROP TABLE IF EXISTS u"]),
        ("PREPARE s FROM 'SELECT 1'", "prepared statement", ["SELECT * FROM items", "EXECUTE s"],
         ["DEALLOCATE PREPARE s"]),
        ("SET autocommit = 0", "SET autocommit=0", ["SELECT * FROM items", "COMMIT", "SELECT 1"],
         ["SET autocommit = 1"]),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SET TRANSACTION", ["SELECT * FROM items"], []),
        ("SET TRANSACTION READ ONLY", "SET TRANSACTION", ["BEGIN", "SELECT * FROM items"], ["COMMIT"]),
        ("LOCK TABLES items WRITE", "LOCK TABLES", ["SELECT * FROM items"], ["UNLOCK TABLES"]),
        ("FLUSH TABLES WITH READ LOCK", "read lock", ["SELECT * FROM items"], ["UNLOCK TABLES"]),
    ],
)
def test_pins_last_until_their_rule_releases_them(
    setup: Setup, env: Env, setup_sql: str, reason: str, keep: list[str], release: list[str]
) -> None:
    """proxy.rw-pins: each reason holds the client on its connection until its release
    (docs/lualib.md, "When pins are released"), after which reads go to the replica."""
    c = setup.client()
    c.send(b"\x03PROXY SET GLOBAL rwsplit.is_debug = true")
    home = c.where(setup_sql)
    assert home[0] == PRIMARY
    assert any(f"[rw-splitting] pinned to backend {PRIMARY}: {reason}" in line
               for line in env.lines()), env.lines()
    for sql in keep + release:
        assert c.where(sql) == home, sql
    assert c.where("SELECT * FROM items")[0] == REPLICA
    assert any(f"unpinned ({reason} is released)" in line for line in env.lines()), env.lines()


def test_user_variables_set_to_constants_follow_the_client(setup: Setup) -> None:
    c = setup.client()
    assert [(r.backend, r.sql) for r in c.query("SET @a = 1, @b = 'x'")] == [(REPLICA, "SET @a = 1, @b = 'x'")]
    assert c.where("SELECT @a, @b FROM items")[0] == REPLICA
    write = c.query("INSERT INTO items VALUES (@a)")
    assert [(r.backend, r.sql) for r in write] == [
        (PRIMARY, "SET @a = 1, @b = 'x'"),
        (PRIMARY, "INSERT INTO items VALUES (@a)"),
    ]


def test_settings_do_not_pin_and_are_repeated_on_every_connection_the_client_moves_to(
    setup: Setup,
) -> None:
    c = setup.client()
    assert [(r.backend, r.sql) for r in c.query("SET NAMES utf8mb4")] == [(REPLICA, "SET NAMES utf8mb4")]
    c.query("SET SESSION sql_mode = 'ANSI'")
    write = c.query("INSERT INTO items VALUES (1)")
    assert [(r.backend, r.sql) for r in write] == [
        (PRIMARY, "SET NAMES utf8mb4"),
        (PRIMARY, "SET SESSION sql_mode = 'ANSI'"),
        (PRIMARY, "INSERT INTO items VALUES (1)"),
    ]
    assert [r.sql for r in c.query("INSERT INTO items VALUES (2)")] == ["INSERT INTO items VALUES (2)"]
    c.query("SET NAMES latin1")  # replaces the earlier SET NAMES, in its place
    read = c.query("SELECT * FROM items")
    assert [(r.backend, r.sql) for r in read] == [
        (REPLICA, "SET NAMES latin1"),
        (REPLICA, "SET SESSION sql_mode = 'ANSI'"),
        (REPLICA, "SELECT * FROM items"),
    ]


def test_com_stmt_prepare_pins_until_closed_and_execute_follows(setup: Setup) -> None:
    c = setup.client()
    ran, _ = c.send(b"\x16SELECT * FROM items WHERE id = ?")
    home = (ran[-1].backend, ran[-1].thread_id)
    assert home[0] == PRIMARY
    ran, _ = c.send(b"\x16SELECT 2")
    assert (ran[-1].backend, ran[-1].thread_id) == home
    ran, _ = c.send(b"\x17" + struct.pack("<IBI", 1, 0, 1))
    assert (ran[-1].backend, ran[-1].thread_id) == home
    assert c.where("SELECT * FROM items") == home
    for stmt_id in (1, 2):  # COM_STMT_CLOSE of both (the stand-in numbers them from 1)
        ran, _ = c.send(b"\x19" + struct.pack("<I", stmt_id))
        assert (ran[-1].backend, ran[-1].thread_id) == home
    assert c.where("SELECT * FROM items")[0] == REPLICA


@pytest.mark.parametrize(
    "sql",
    [
        "SET autocommit = 1",
        "SET @@session.autocommit = ON",
        "SET GLOBAL max_connections = 10",
        "INSERT INTO t VALUES (1)",
    ],
)
def test_statements_without_session_state_do_not_pin(setup: Setup, sql: str) -> None:
    c = setup.client()
    assert c.where(sql)[0] == PRIMARY
    assert c.where("SELECT * FROM items")[0] == REPLICA


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("SELECT SQL_CALC_FOUND_ROWS * FROM items LIMIT 10", "SELECT FOUND_ROWS()"),
        ("SELECT * FROM items", "SHOW WARNINGS"),
        ("SELECT * FROM items", "SELECT @@warning_count"),
        ("UPDATE items SET n = 1", "SELECT ROW_COUNT()"),
        ("UPDATE items SET n = 1", "SHOW COUNT(*) WARNINGS"),
    ],
)
def test_statements_about_the_previous_one_run_on_its_connection(setup: Setup, first: str, second: str) -> None:
    c = setup.client()
    where = c.where(first)
    assert c.where(second) == where


def test_use_as_sql_becomes_init_db_and_the_database_follows_the_client(setup: Setup) -> None:
    c = setup.client()
    ran = c.query("USE other")
    assert [r.packet for r in ran] == [b"\x02other"]
    on_replica = c.query("SELECT * FROM items")
    assert [(r.inj_id, r.packet) for r in on_replica] == [(2, b"\x02other"), (1, b"\x03SELECT * FROM items")]
    assert on_replica[0].backend == on_replica[1].backend == REPLICA
    # the connection now has the database: no second sync
    assert [r.inj_id for r in c.query("SELECT 1 FROM items")] == [1]
    on_primary = c.query("INSERT INTO items VALUES (1)")
    assert on_primary[-1].backend == PRIMARY
    assert all(r.backend == PRIMARY for r in on_primary)


def test_a_database_missing_on_the_replica_is_an_err_naming_it(setup: Setup) -> None:
    setup.world.backends[1].databases.discard("other")
    c = setup.client()
    c.query("USE other")
    ran, answer = c.send(b"\x03SELECT * FROM items")
    assert [r.inj_id for r in ran] == [2]  # the query itself was not sent
    assert answer is not None and answer.response is not None
    message = ERR.parse(answer.response[0]).message
    assert "cannot use database 'other'" in message and REPLICA in message


def test_a_write_never_goes_to_a_replica_when_no_primary_connection_is_idle(env: Env) -> None:
    s = Setup(env)
    s.world.add_idle(2, count=4)  # replica connections only
    c = s.client(login=False)
    c.conn.client.username = "app"
    assert c.where("SELECT * FROM items")[0] == REPLICA
    ran, answer = c.send(b"\x03INSERT INTO items VALUES (1)")
    assert ran == []
    assert answer is not None and answer.response is not None
    assert "no idle connection to the read-write backend" in ERR.parse(answer.response[0]).message


def test_reads_use_the_primary_when_no_replica_connection_is_idle(env: Env) -> None:
    s = Setup(env)
    s.world.add_idle(1, count=2)
    c = s.client()
    assert c.where("SELECT * FROM items")[0] == PRIMARY


def test_a_down_replica_is_not_used(setup: Setup) -> None:
    setup.world.backends[1].state = BackendState.DOWN
    c = setup.client()
    assert c.where("SELECT * FROM items")[0] == PRIMARY


def test_com_reset_connection_unpins(setup: Setup) -> None:
    c = setup.client()
    home = c.where("SET @a = 1")
    assert c.where("SELECT 1 FROM items") == home
    ran, _ = c.send(b"\x1f")
    assert (ran[-1].backend, ran[-1].thread_id) == home
    assert c.where("SELECT 1 FROM items")[0] == REPLICA


def test_quit_is_answered_and_only_clean_connections_go_back_to_the_pool(setup: Setup) -> None:
    world = setup.world
    clean = setup.client()
    clean.where("SELECT * FROM items")
    idle_before = world.idle(2)
    _, answer = clean.send(b"\x01")
    assert answer is not None and answer.decision == Decision.SEND_RESULT
    clean.disconnect()
    assert world.idle(2) == idle_before + 1

    dirty = setup.client()
    dirty.where("SELECT GET_LOCK('x', 1)")
    primary_idle = world.idle(1)
    dirty.disconnect()
    assert world.idle(1) == primary_idle  # closed, not pooled: the lock must not travel


def test_login_fills_pools_below_min_idle_primary_first(env: Env) -> None:
    s = Setup(env)  # empty pools, min_idle_connections = 4
    for _ in range(4):
        s.client()
    assert (s.world.idle(1), s.world.idle(2)) == (4, 0)
    for _ in range(4):
        s.client()
    assert (s.world.idle(1), s.world.idle(2)) == (4, 4)
    # pools full: a new client gets a new primary connection, parked after login too
    s.client()
    assert (s.world.idle(1), s.world.idle(2)) == (5, 4)


def test_a_pooled_connection_is_kept_by_connect_server(env: Env) -> None:
    s = Setup(env)
    s.world.add_idle(1, count=5)
    s.world.add_idle(2, count=4)
    c = s.client(login=False)
    assert c.login() == Decision.IGNORE_RESULT


def test_proxy_show_config_and_set_global_work_in_the_script(setup: Setup) -> None:
    c = setup.client()
    _, answer = c.send(b"\x03PROXY SET GLOBAL rwsplit.min_idle_connections = 1")
    assert answer is not None and answer.response is not None and answer.response[0][:1] == b"\x00"
    _, shown = c.send(b"\x03PROXY SHOW CONFIG")
    assert shown is not None and shown.response is not None
    assert any(b"min_idle_connections" in p and b"\x011" in p for p in shown.response)


def test_transaction_state_is_per_client(setup: Setup) -> None:
    # MySQL Proxy 0.8.5 kept is_in_transaction in a file-level local of a required module
    a, b = setup.client(), setup.client()
    a_home = a.where("BEGIN")
    assert b.where("SELECT * FROM items")[0] == REPLICA
    assert a.where("SELECT * FROM items") == a_home


def test_a_big_statement_is_classified_from_its_beginning(setup: Setup) -> None:
    import time

    c = setup.client()
    rows = ",".join(f"({i}, 'it''s row {i}', 'padding padding padding padding')" for i in range(20000))
    bulk = f"INSERT INTO items (id, name, pad) VALUES {rows}"
    assert len(bulk) > 1_000_000
    started = time.monotonic()
    assert c.where(bulk)[0] == PRIMARY
    assert time.monotonic() - started < 0.5  # tokenizing it whole takes longer
    big_read = "SELECT * FROM items WHERE name IN (" + ",".join(f"'n{i}'" for i in range(5000)) + ")"
    assert c.where(big_read)[0] == REPLICA
    # anything that may matter further in: tokenized whole
    assert c.where(big_read[:-1] + ", @who := 'x')")[0] == PRIMARY
