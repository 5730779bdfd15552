"""Real client libraries through the proxy (no script): it must look like the server.

Each client does the same things it would do against MariaDB directly: connect, query,
a prepared statement, several result sets (multi-statements and a stored procedure),
LOAD DATA LOCAL INFILE, TLS to the proxy, a 20 MiB blob both ways, change user and
reset connection where the library has an API for it.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import MySQLdb
import pymysql
import pytest
from pymysql.constants import CLIENT

from tests.proxy.conftest import Proxy
from tests.support.certs import TLSCerts
from tests.support.mariadb import MariaDB, find_program

pytestmark = pytest.mark.timeout(60)

BLOB_SIZE = 20 * 1024 * 1024
BIG_PACKET = 64 * 1024 * 1024


@pytest.fixture(scope="module", autouse=True)
def schema(mariadb: MariaDB) -> None:
    """A procedure with two result sets and a table for LOAD DATA, made directly."""
    mariadb.sql("DROP PROCEDURE IF EXISTS test.two_results")
    mariadb.sql("CREATE PROCEDURE test.two_results() BEGIN SELECT 1 AS a; "
                "SELECT 2 AS b, 3 AS c; END")


@pytest.fixture
def table(mariadb: MariaDB, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"test.t_{request.node.name[:40]}".replace("[", "_").replace("]", "").replace("-", "_")
    mariadb.sql(f"DROP TABLE IF EXISTS {name}")
    mariadb.sql(f"CREATE TABLE {name} (id INT PRIMARY KEY, v LONGBLOB)")
    yield name
    mariadb.sql(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text("".join(f"{i}\tvalue {i}\n" for i in range(1, 101)))
    return path


def blob() -> bytes:
    # Not compressible into a repeat pattern the server could shortcut, and binary.
    seed = hashlib.sha256(b"chassis").digest()
    return (seed * (BLOB_SIZE // len(seed) + 1))[:BLOB_SIZE]


# -- PyMySQL ---------------------------------------------------------------------------


def test_pymysql_query_and_server_identity(proxy: Proxy, mariadb: MariaDB) -> None:
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 + 1, @@port, CURRENT_USER()")
        assert cur.fetchone() == (2, mariadb.port, "root@localhost")


def test_pymysql_prepared_statement_in_sql(proxy: Proxy) -> None:
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("PREPARE s FROM 'SELECT ? * 2'")
        cur.execute("SET @x = 21")
        cur.execute("EXECUTE s USING @x")
        assert cur.fetchone() == (42,)


def test_pymysql_multi_statements_and_procedure(proxy: Proxy) -> None:
    with proxy.connect(client_flag=CLIENT.MULTI_STATEMENTS) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1; SELECT 2, 3; DO 0")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2, 3),)
        cur.execute("CALL test.two_results()")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2, 3),)


def test_pymysql_load_data_local(proxy: Proxy, table: str, csv_file: Path) -> None:
    with proxy.connect(local_infile=True) as conn, conn.cursor() as cur:
        cur.execute(f"LOAD DATA LOCAL INFILE '{csv_file}' INTO TABLE {table}")
        assert cur.rowcount == 100
        cur.execute(f"SELECT COUNT(*), MAX(v) FROM {table}")
        assert cur.fetchone() == (100, b"value 99")


def test_pymysql_tls_to_the_proxy(proxy: Proxy, tls_certs: TLSCerts) -> None:
    with proxy.connect(ssl={"ca": str(tls_certs.ca_cert)}) as conn, conn.cursor() as cur:
        cur.execute("SELECT 7")
        assert cur.fetchone() == (7,)
        # The proxy's leg to the server is plain TCP here: the server sees no TLS.
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone() == ("Ssl_cipher", "")
        assert conn._sock.version().startswith("TLS")


def test_pymysql_20_mib_blob_both_ways(proxy: Proxy, table: str) -> None:
    data = blob()
    with proxy.connect(max_allowed_packet=BIG_PACKET) as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO {table} VALUES (1, %s)", (data,))
        cur.execute(f"SELECT v, LENGTH(v) FROM {table} WHERE id = 1")
        value, length = cur.fetchone()
        assert length == BLOB_SIZE
        assert hashlib.sha256(value).digest() == hashlib.sha256(data).digest()


def _pymysql_change_user(conn: Any, user: str, password: str) -> None:
    """COM_CHANGE_USER by hand: PyMySQL has no API for it."""
    from pymysql import _auth

    auth = _auth.scramble_native_password(password.encode(), conn.salt) if password else b""
    payload = (user.encode() + b"\0" + bytes([len(auth)]) + auth + b"test\0"
               + (45).to_bytes(2, "little") + b"mysql_native_password\0" + b"\0")
    conn._execute_command(0x11, payload)
    packet = conn._read_packet()
    if packet.is_auth_switch_request():  # MariaDB asks again with a fresh scramble
        plugin, _, salt = packet.get_all_data()[1:].partition(b"\0")
        assert plugin == b"mysql_native_password"
        conn.salt = salt.rstrip(b"\0")
        conn.write_packet(_auth.scramble_native_password(password.encode(), conn.salt))
        packet = conn._read_packet()
    assert packet.is_ok_packet()


def test_pymysql_change_user_and_reset_connection(proxy: Proxy) -> None:
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SET @keep = 1")
        _pymysql_change_user(conn, "native", "native_pw")
        cur.execute("SELECT CURRENT_USER(), DATABASE(), @keep")
        assert cur.fetchone() == ("native@%", "test", None)
        cur.execute("SET @keep = 2")
        conn._execute_command(0x1F, b"")  # COM_RESET_CONNECTION
        conn._read_ok_packet()
        cur.execute("SELECT @keep, CURRENT_USER()")
        assert cur.fetchone() == (None, "native@%")


# -- mysql-connector-python ------------------------------------------------------------

CONNECTOR_MODES = [pytest.param(True, id="pure"),
                   pytest.param(False, id="cext", marks=pytest.mark.skipif(
                       not mysql.connector.HAVE_CEXT,
                       reason="the installed mysql-connector-python has no usable C extension"))]


def connector(proxy: Proxy, pure: bool, **kwargs: Any) -> Any:
    kwargs.setdefault("user", "root")
    kwargs.setdefault("password", "")
    kwargs.setdefault("ssl_disabled", True)
    return mysql.connector.connect(host=proxy.host, port=proxy.port, use_pure=pure,
                                   connection_timeout=10, **kwargs)


@pytest.mark.parametrize("pure", CONNECTOR_MODES)
def test_connector_query_prepared_and_results(proxy: Proxy, pure: bool) -> None:
    conn = connector(proxy, pure, database="test")
    try:
        cur = conn.cursor()
        cur.execute("SELECT 'hello', 1 + 2")
        assert cur.fetchall() == [("hello", 3)]
        pcur = conn.cursor(prepared=True)
        pcur.execute("SELECT ? + 1, ?", (41, "x"))
        assert pcur.fetchall() == [(42, "x")]
        pcur.close()
        results = []
        cur.execute("CALL test.two_results()")
        while True:
            if cur.with_rows:
                results.append(cur.fetchall())
            if not cur.nextset():
                break
        assert results == [[(1,)], [(2, 3)]]
        cur.close()
    finally:
        conn.close()


@pytest.mark.parametrize("pure", CONNECTOR_MODES)
def test_connector_multi_statements(proxy: Proxy, pure: bool) -> None:
    conn = connector(proxy, pure)
    try:
        cur = conn.cursor()
        results = []
        cur.execute("SELECT 1; SELECT 2, 3")
        while True:
            if cur.with_rows:
                results.append(cur.fetchall())
            if not cur.nextset():
                break
        assert results == [[(1,)], [(2, 3)]]
    finally:
        conn.close()


@pytest.mark.parametrize("pure", CONNECTOR_MODES)
def test_connector_load_data_local(proxy: Proxy, pure: bool, table: str, csv_file: Path) -> None:
    conn = connector(proxy, pure, allow_local_infile=True, autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute(f"LOAD DATA LOCAL INFILE '{csv_file}' INTO TABLE {table}")
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        assert cur.fetchall() == [(100,)]
    finally:
        conn.close()


@pytest.mark.parametrize("pure", CONNECTOR_MODES)
def test_connector_tls_verified(proxy: Proxy, pure: bool, tls_certs: TLSCerts) -> None:
    conn = connector(proxy, pure, ssl_disabled=False, ssl_ca=str(tls_certs.ca_cert),
                     ssl_verify_cert=True)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 5")
        assert cur.fetchall() == [(5,)]
    finally:
        conn.close()


@pytest.mark.parametrize("pure", CONNECTOR_MODES)
def test_connector_20_mib_blob(proxy: Proxy, pure: bool, table: str) -> None:
    data = blob()
    conn = connector(proxy, pure, autocommit=True)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(f"INSERT INTO {table} VALUES (?, ?)", (1, data))
        cur.close()
        cur = conn.cursor()
        cur.execute(f"SELECT v FROM {table} WHERE id = 1")
        (value,) = cur.fetchone()
        assert bytes(value) == data
    finally:
        conn.close()


@pytest.mark.parametrize("pure", CONNECTOR_MODES)
def test_connector_change_user_and_reset(proxy: Proxy, pure: bool) -> None:
    conn = connector(proxy, pure)
    try:
        cur = conn.cursor()
        cur.execute("SET @keep = 1")
        cur.close()
        conn.cmd_change_user(username="native", password="native_pw", database="test")
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER(), DATABASE(), @keep")
        assert cur.fetchall() == [("native@%", "test", None)]
        cur.execute("SET @keep = 2")
        cur.close()
        conn.cmd_reset_connection()
        cur = conn.cursor()
        cur.execute("SELECT @keep")
        assert cur.fetchall() == [(None,)]
    finally:
        conn.close()


# -- mysqlclient (MySQLdb, libmariadb) ---------------------------------------------------


def mysqldb(proxy: Proxy, **kwargs: Any) -> Any:
    kwargs.setdefault("user", "root")
    kwargs.setdefault("password", "")
    return MySQLdb.connect(host=proxy.host, port=proxy.port, connect_timeout=10, **kwargs)


def test_mysqldb_query_multi_and_procedure(proxy: Proxy) -> None:
    conn = mysqldb(proxy, client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        cur = conn.cursor()
        cur.execute("SELECT 1; SELECT 2, 3")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2, 3),)
        while cur.nextset():
            pass
        cur.execute("CALL test.two_results()")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2, 3),)
        while cur.nextset():
            pass
        cur.execute("PREPARE s FROM 'SELECT ? + 1'")
        cur.execute("SET @x = 1")
        cur.execute("EXECUTE s USING @x")
        assert cur.fetchall() == ((2,),)
    finally:
        conn.close()


def test_mysqldb_load_data_tls_and_change_user(proxy: Proxy, table: str, csv_file: Path,
                                               tls_certs: TLSCerts) -> None:
    conn = mysqldb(proxy, local_infile=1, ssl={"ca": str(tls_certs.ca_cert)}, autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")  # server side: plain
        assert cur.fetchall() == (("Ssl_version", ""),)
        assert conn.get_host_info()
        cur.execute(f"LOAD DATA LOCAL INFILE '{csv_file}' INTO TABLE {table}")
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        assert cur.fetchall() == ((100,),)
        cur.execute("SET @keep = 1")
        conn.change_user("native", "native_pw", "test")
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER(), @keep")
        assert cur.fetchall() == (("native@%", None),)
    finally:
        conn.close()


def test_mysqldb_20_mib_blob(proxy: Proxy, table: str) -> None:
    data = blob()
    conn = mysqldb(proxy, autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute(f"INSERT INTO {table} VALUES (1, %s)", (data,))
        cur.execute(f"SELECT v FROM {table} WHERE id = 1")
        assert cur.fetchone()[0] == data
    finally:
        conn.close()


# -- the mariadb command-line client ----------------------------------------------------


def cli(proxy: Proxy, sql: str, *extra: str, user: str = "root") -> str:
    cmd = [find_program("mariadb"), "--no-defaults", f"--user={user}", f"--host={proxy.host}",
           f"--port={proxy.port}", "--protocol=TCP", "--batch", "--skip-column-names",
           *extra, "-e", sql]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli_query_prepared_multi_and_procedure(proxy: Proxy) -> None:
    out = cli(proxy, "SELECT 1; SELECT 'two'; PREPARE s FROM 'SELECT ? * 3'; SET @a = 5; "
                     "EXECUTE s USING @a; CALL test.two_results()")
    assert out.split("\n") == ["1", "two", "15", "1", "2\t3", ""]


def test_cli_load_data_local(proxy: Proxy, table: str, csv_file: Path) -> None:
    out = cli(proxy, f"LOAD DATA LOCAL INFILE '{csv_file}' INTO TABLE {table}; "
                     f"SELECT COUNT(*) FROM {table}", "--local-infile=1")
    assert out == "100\n"


def test_cli_tls_verified(proxy: Proxy, tls_certs: TLSCerts) -> None:
    out = cli(proxy, "SELECT 'secure'", "--ssl", f"--ssl-ca={tls_certs.ca_cert}",
              "--ssl-verify-server-cert")
    assert out == "secure\n"


def test_cli_20_mib_row(proxy: Proxy) -> None:
    out = cli(proxy, f"SELECT REPEAT('x', {BLOB_SIZE})", "--max-allowed-packet=64M")
    assert out == "x" * BLOB_SIZE + "\n"


# -- KILL from another connection ---------------------------------------------------------


def test_kill_from_another_connection(proxy: Proxy) -> None:
    victim = proxy.connect()
    killer = proxy.connect()
    try:
        with victim.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            (victim_id,) = cur.fetchone()
        errors: list[BaseException] = []

        def sleep() -> None:
            try:
                with victim.cursor() as cur:
                    cur.execute("SELECT SLEEP(30)")
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=sleep)
        thread.start()
        with killer.cursor() as cur:
            deadline_rows: tuple[Any, ...] = ()
            for _ in range(500):
                cur.execute("SELECT COUNT(*) FROM information_schema.processlist "
                            "WHERE id = %s AND info LIKE 'SELECT SLEEP%%'", (victim_id,))
                deadline_rows = cur.fetchone()
                if deadline_rows[0]:
                    break
            assert deadline_rows[0] == 1
            cur.execute(f"KILL {victim_id}")
        thread.join(20)
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], pymysql.err.OperationalError)
        assert errors[0].args[0] in (1927, 2013), errors[0]
        with killer.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        killer.close()
        victim.close()


def test_mysqldb_change_user_with_an_auth_switch(proxy: Proxy) -> None:
    """MariaDB answers COM_CHANGE_USER to an ed25519 account with an AuthSwitchRequest
    (MySQL Proxy 0.8.5 dropped the connection there)."""
    conn = mysqldb(proxy)
    try:
        conn.change_user("ed", "ed_pw", "test")
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER(), DATABASE()")
        assert cur.fetchall() == (("ed@%", "test"),)
    finally:
        conn.close()
