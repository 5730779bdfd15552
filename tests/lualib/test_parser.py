"""proxy.parser: get_tables() and tablename_expand(), through a real script whose client
has the default database ``shop``."""

from __future__ import annotations

import pytest
from chassis_proxy.hooks import PeerInfo

from tests.lualib.harness import EVAL, Env, Lua, lua_str, tcp

R, W = "read", "write"


def tables(lua: Lua, sql: str) -> dict[str, str]:
    got = lua.eval(f"return parser.get_tables(tokenizer.tokenize({lua_str(sql)}))")
    return got or {}


CASES: list[tuple[str, dict[str, str]]] = [
    # SELECT: FROM lists, db prefixes, quoting
    ("SELECT * FROM items", {"shop.items": R}),
    ("select * from Archive.items where id = 1", {"Archive.items": R}),
    ("SELECT * FROM `old data`.`my items`", {"old data.my items": R}),
    ("SELECT * FROM a, b2.b, c WHERE a.x = 1 LIMIT 1, 2", {"shop.a": R, "b2.b": R, "shop.c": R}),
    ("SELECT a, b, c FROM t", {"shop.t": R}),
    # JOINs: the columns of ON conditions are no tables
    (
        "SELECT a.x, b.y FROM t1 AS a JOIN t2 b ON a.id = b.id AND b.z = a.z",
        {"shop.t1": R, "shop.t2": R},
    ),
    (
        "SELECT * FROM t1 LEFT OUTER JOIN db.t2 USING (id, k) "
        "INNER JOIN t3 ON t3.a = t1.a STRAIGHT_JOIN t4 NATURAL JOIN t5 CROSS JOIN t6",
        {"shop.t1": R, "db.t2": R, "shop.t3": R, "shop.t4": R, "shop.t5": R, "shop.t6": R},
    ),
    ("SELECT * FROM (t1 JOIN t2 ON t1.a = t2.a) JOIN t3", {"shop.t1": R, "shop.t2": R, "shop.t3": R}),
    # subqueries and derived tables are read; aliases are no tables
    (
        "SELECT * FROM t1 WHERE id IN (SELECT id FROM t2 WHERE x IN (SELECT x FROM db.t3))",
        {"shop.t1": R, "shop.t2": R, "db.t3": R},
    ),
    ("SELECT * FROM (SELECT a, b FROM t1) AS d JOIN t2 ON d.a = t2.a", {"shop.t1": R, "shop.t2": R}),
    ("SELECT (SELECT MAX(x) FROM t2), y FROM t1", {"shop.t1": R, "shop.t2": R}),
    ("(SELECT a FROM t1) UNION ALL (SELECT a FROM t2) ORDER BY a", {"shop.t1": R, "shop.t2": R}),
    ("SELECT a FROM t1 UNION SELECT a FROM t2", {"shop.t1": R, "shop.t2": R}),
    ("SELECT x INTO @a FROM t1 FOR UPDATE", {"shop.t1": R}),
    # comments are not read; /*! */ is, as the server runs it
    ("SELECT /* FROM hidden */ * FROM t -- JOIN other", {"shop.t": R}),
    ("SELECT /*!40001 SQL_NO_CACHE */ * FROM t", {"shop.t": R}),
    # INSERT / REPLACE
    ("INSERT INTO items (a, b) VALUES (1, 2), (3, 4)", {"shop.items": W}),
    ("INSERT INTO items(a) VALUES (1)", {"shop.items": W}),
    ("insert low_priority ignore into db.items values (1)", {"db.items": W}),
    ("INSERT items SET a = 1", {"shop.items": W}),
    ("INSERT INTO log SELECT * FROM items WHERE a > 1", {"shop.log": W, "shop.items": R}),
    ("INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = a + 1", {"shop.t": W}),
    ("REPLACE INTO db.t VALUES (1)", {"db.t": W}),
    # UPDATE
    ("UPDATE items SET a = 1 WHERE b = 2", {"shop.items": W}),
    ("UPDATE LOW_PRIORITY IGNORE db.items SET a = 1", {"db.items": W}),
    ("UPDATE t1 JOIN db.t2 ON t1.id = t2.id SET t1.a = t2.b", {"shop.t1": W, "db.t2": W}),
    ("UPDATE t1, t2 SET t1.a = 1, t2.b = 2", {"shop.t1": W, "shop.t2": W}),
    ("UPDATE t SET a = (SELECT MAX(b) FROM u) WHERE c IN (SELECT c FROM v)", {"shop.t": W, "shop.u": R, "shop.v": R}),
    # DELETE: single table, both multi-table forms, aliases resolved
    ("DELETE FROM items WHERE id = 1", {"shop.items": W}),
    ("DELETE LOW_PRIORITY QUICK IGNORE FROM db.items", {"db.items": W}),
    ("DELETE t1 FROM t1 JOIN t2 ON t1.a = t2.a", {"shop.t1": W, "shop.t2": R}),
    ("DELETE a, b FROM t1 AS a JOIN db.t2 b ON a.x = b.x JOIN t3", {"shop.t1": W, "db.t2": W, "shop.t3": R}),
    ("DELETE t1.* FROM t1, t2 WHERE t1.a = t2.a", {"shop.t1": W, "shop.t2": R}),
    ("DELETE FROM t1, t2 USING t1 JOIN t2 JOIN t3", {"shop.t1": W, "shop.t2": W, "shop.t3": R}),
    ("DELETE FROM t WHERE id IN (SELECT id FROM u)", {"shop.t": W, "shop.u": R}),
    # DDL
    ("CREATE TABLE t (id INT PRIMARY KEY)", {"shop.t": W}),
    ("CREATE TEMPORARY TABLE IF NOT EXISTS db.t (id INT)", {"db.t": W}),
    ("CREATE TABLE t LIKE db.u", {"shop.t": W, "db.u": R}),
    ("CREATE TABLE t AS SELECT * FROM u", {"shop.t": W, "shop.u": R}),
    (
        "CREATE TABLE c (id INT, p INT, FOREIGN KEY (p) REFERENCES parent(id))",
        {"shop.c": W, "shop.parent": R},
    ),
    ("DROP TABLE IF EXISTS t1, db.t2", {"shop.t1": W, "db.t2": W}),
    ("DROP TEMPORARY TABLE t", {"shop.t": W}),
    ("ALTER TABLE t ADD COLUMN c INT", {"shop.t": W}),
    ("ALTER TABLE t RENAME TO db.u", {"shop.t": W, "db.u": W}),
    ("ALTER TABLE t RENAME COLUMN a TO b", {"shop.t": W}),
    ("RENAME TABLE a TO b, db.c TO db.d", {"shop.a": W, "shop.b": W, "db.c": W, "db.d": W}),
    ("TRUNCATE TABLE t", {"shop.t": W}),
    ("TRUNCATE db.t", {"db.t": W}),
    ("CREATE UNIQUE INDEX i ON db.t (a, b)", {"db.t": W}),
    ("DROP INDEX i ON t", {"shop.t": W}),
    ("CREATE VIEW v AS SELECT * FROM t", {"shop.t": R}),
    ("LOCK TABLES t1 READ, db.t2 AS x WRITE, t3 READ LOCAL", {"shop.t1": R, "db.t2": W, "shop.t3": R}),
    # several statements
    ("SELECT * FROM a; DELETE FROM b", {"shop.a": R, "shop.b": W}),
    ("SELECT * FROM a; ", {"shop.a": R}),
    # no tables
    ("SELECT 1", {}),
    ("SELECT NOW(), @a", {}),
    ("SELECT 1 FROM DUAL", {}),
    ("SET autocommit = 0", {}),
    ("SHOW TABLES FROM db", {}),
    ("CREATE DATABASE x", {}),
    ("CREATE PROCEDURE p() SELECT * FROM t", {}),
    ("BEGIN", {}),
    ("", {}),
]


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[c[0][:50] for c in CASES])
def test_get_tables_finds_read_and_written_tables(lua: Lua, sql: str, expected: dict[str, str]) -> None:
    assert tables(lua, sql) == expected


def test_get_tables_keeps_no_state_between_calls(lua: Lua) -> None:
    # 0.8.5 kept the DDL kind in a global: after a CREATE TABLE, later DDL was misread
    assert tables(lua, "CREATE TABLE t1 (a INT)") == {"shop.t1": W}
    assert tables(lua, "DROP VIEW v") == {}
    assert tables(lua, "CREATE INDEX i ON t2 (a)") == {"shop.t2": W}


def test_get_tables_takes_sql_text_and_a_default_db(lua: Lua) -> None:
    assert lua.eval("return parser.get_tables('SELECT * FROM t JOIN x.u', 'other')") == {
        "other.t": R,
        "x.u": R,
    }


def test_without_a_default_db_names_stay_bare(env: Env) -> None:
    host = env.host(EVAL)
    c = env.connect(host)
    c.conn.client = PeerInfo(src=tcp("127.0.0.1", 50000), dst=tcp("127.0.0.1", 4040), username="app")
    assert tables(c, "SELECT * FROM t JOIN db.u") == {"t": R, "db.u": R}
    assert c.eval("return parser.tablename_expand('t')") == "t"


def test_tablename_expand_uses_the_clients_default_db(lua: Lua) -> None:
    assert lua.eval("return parser.tablename_expand('items')") == "shop.items"
    assert lua.eval("return parser.tablename_expand('items', 'archive')") == "archive.items"
    assert lua.eval("return parser.tablename_expand('items', '')") == "items"


def test_histogram_style_script_counts_reads_and_writes_per_table(env: Env) -> None:
    host = env.host(
        """
        local tokenizer = require("proxy.tokenizer")
        local parser = require("proxy.parser")
        proxy.global.tables = proxy.global.tables or {}
        function read_query(packet)
          if packet:byte() ~= proxy.COM_QUERY then return end
          local q = packet:sub(2)
          if q == "SHOW HISTOGRAM" then
            local rows = {}
            for name, c in pairs(proxy.global.tables) do rows[#rows + 1] = { name, c.read, c.write } end
            table.sort(rows, function(a, b) return a[1] < b[1] end)
            proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
              fields = { { name = "table" }, { name = "reads" }, { name = "writes" } }, rows = rows } }
            return proxy.PROXY_SEND_RESULT
          end
          for name, mode in pairs(parser.get_tables(tokenizer.tokenize(q))) do
            local c = proxy.global.tables[name] or { read = 0, write = 0 }
            c[mode] = c[mode] + 1
            proxy.global.tables[name] = c
          end
        end
        """
    )
    first, second = env.connect(host), env.connect(host)
    first.query("SELECT * FROM items JOIN prices ON items.id = prices.id")
    second.query("UPDATE items SET n = n + 1")
    second.query("INSERT INTO audit.log SELECT * FROM prices")
    _, rows = first.reply("SHOW HISTOGRAM").rows()
    assert rows == [
        ["audit.log", "0", "1"],
        ["shop.items", "1", "1"],
        ["shop.prices", "2", "0"],
    ]
