"""Record real conversations with a MariaDB server as codec test vectors (run by hand).

Not part of the suite (it needs a server): it relays real clients (PyMySQL,
mysql-connector-python, mysqlclient/libmariadb, the ``mariadb`` CLI) through a tiny
recording relay to 127.0.0.1:3306 and writes ``vectors/<client>.json``: the ordered
list of ``[direction, seq, payload-hex]``, direction ``"c"`` (client to server) or
``"s"``. The tests only read those files.

    .venv/bin/python tests/codec/capture_vectors.py [--port 3306]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import select
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable

from chassis_mysql.commands import (
    SENT_AS_LONG_DATA,
    ComChangeUser,
    ComStmtClose,
    ComStmtExecute,
    ComStmtFetch,
    ComStmtReset,
    ComStmtSendLongData,
    StmtPrepareOK,
    stmt_execute,
)
from chassis_mysql.constants import Capability, FieldType
from chassis_mysql.framing import Packet, PacketReader, frame
from chassis_mysql.handshake import HandshakeResponse41, HandshakeV10

VECTORS = pathlib.Path(__file__).parent / "vectors"


class Recorder:
    """Accept one client, relay it to the server, record every logical packet in order."""

    def __init__(self, backend: tuple[str, int]) -> None:
        self.backend = backend
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.packets: list[list[object]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        client, _ = self.listener.accept()
        server = socket.create_connection(self.backend)
        readers = {client: PacketReader(), server: PacketReader()}
        peer = {client: server, server: client}
        tag = {client: "c", server: "s"}
        open_socks = [client, server]
        while open_socks:
            ready, _, _ = select.select(open_socks, [], [], 10)
            if not ready:
                break
            for sock in ready:
                data = sock.recv(1 << 20)
                if not data:
                    open_socks = []
                    break
                peer[sock].sendall(data)
                readers[sock].feed(data)
                for packet in readers[sock]:
                    self.packets.append([tag[sock], packet.seq, packet.payload.hex()])
        client.close()
        server.close()
        self.listener.close()

    def finish(self) -> list[list[object]]:
        self.thread.join(15)
        return self.packets


def record(name: str, run: Callable[[int], None], backend: tuple[str, int]) -> None:
    rec = Recorder(backend)
    run(rec.port)
    packets = rec.finish()
    VECTORS.mkdir(exist_ok=True)
    (VECTORS / f"{name}.json").write_text(json.dumps(packets, indent=0) + "\n")
    print(f"{name}: {len(packets)} packets")


def run_pymysql(port: int) -> None:
    import pymysql
    from pymysql.constants import CLIENT

    conn = pymysql.connect(
        host="127.0.0.1", port=port, user="root", password="", database="test",
        local_infile=True, client_flag=CLIENT.MULTI_STATEMENTS,
    )
    with conn.cursor() as cur:
        cur.execute("SELECT 1 AS one, NULL AS nothing, 'x' AS s, 2.5 AS d")
        cur.execute("SELECT 1; SELECT 2, 3")
        while cur.nextset():
            pass
        cur.execute("DROP TABLE IF EXISTS codec_vec")
        cur.execute("CREATE TABLE codec_vec (a INT, b VARCHAR(10))")
        with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
            f.write("1\tone\n2\ttwo\n")
        cur.execute(f"LOAD DATA LOCAL INFILE '{f.name}' INTO TABLE codec_vec")
        os.unlink(f.name)
        cur.execute("SELECT * FROM codec_vec")
        try:
            cur.execute("SELECT * FROM no_such_table")
        except pymysql.MySQLError:
            pass
        cur.execute("DROP TABLE codec_vec")
    conn.ping()
    conn.select_db("mysql")
    conn.close()


def run_connector(port: int) -> None:
    import mysql.connector

    conn = mysql.connector.connect(
        host="127.0.0.1", port=port, user="root", password="", database="test", use_pure=True,
        ssl_disabled=True,
    )
    cur = conn.cursor(prepared=True)
    cur.execute(
        "SELECT ?, ?, ?, ?, ?, CAST(? AS DATETIME), CAST(? AS DATE), CAST(? AS TIME)",
        (1, -2.5, "text", None, 2**40, "2024-02-29 12:34:56.789", "2024-02-29", "-12:34:56"),
    )
    cur.fetchall()
    cur.close()
    plain = conn.cursor()
    plain.execute("SELECT seq FROM seq_1_to_3")
    plain.fetchall()
    plain.close()
    conn.cmd_statistics()
    conn.cmd_reset_connection()
    conn.cmd_change_user(username="root", password="", database="test")
    conn.close()


def run_mysqlclient(port: int) -> None:
    import MySQLdb

    conn = MySQLdb.connect(host="127.0.0.1", port=port, user="root", passwd="", db="test")
    cur = conn.cursor()
    cur.execute("SELECT 1, 'two', NULL")
    cur.fetchall()
    conn.close()


def run_cli(port: int) -> None:
    subprocess.run(
        ["mariadb", "-h127.0.0.1", f"-P{port}", "-uroot", "--skip-ssl", "test",
         "-e", "SELECT 1; SELECT @@version_comment"],
        check=True, capture_output=True,
    )


class RawClient:
    """A minimal client built on the codec, for commands the libraries never send.

    It reads each answer until the server has been quiet for a moment: crude, but this
    script only records; the tests decide what the packets mean.
    """

    def __init__(self, port: int, capabilities: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.reader = PacketReader()
        hs = HandshakeV10.parse(self.read()[0].payload)
        caps = int(hs.capabilities) & capabilities
        login = HandshakeResponse41(
            Capability(caps), b"root", b"", 1 << 24, 45, b"test", "mysql_native_password",
            {b"_client_name": b"chassis-capture"},
        )
        self.send(login.encode(), 1)
        self.read()

    def send(self, payload: bytes, seq: int = 0) -> None:
        self.sock.sendall(frame(payload, seq))

    def read(self, quiet: float = 0.3) -> list[Packet]:
        packets: list[Packet] = []
        self.sock.settimeout(quiet)
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                if packets:
                    return packets
                continue
            if not data:
                return packets
            self.reader.feed(data)
            packets.extend(self.reader)

    def command(self, payload: bytes) -> list[Packet]:
        self.send(payload)
        return self.read()

    def close(self) -> None:
        self.send(b"\x01")
        self.sock.close()


ALL_TYPES_TABLE = """CREATE TABLE codec_types (
  t TINYINT, s SMALLINT UNSIGNED, m MEDIUMINT, i INT, b BIGINT UNSIGNED, f FLOAT, d DOUBLE,
  dec1 DECIMAL(10,3), dt DATE, dtm DATETIME(6), tm TIME(6), ts TIMESTAMP NULL, y YEAR,
  bt BIT(10), e ENUM('a','b'), st SET('x','y'), j JSON, bl BLOB, g GEOMETRY, v VARCHAR(20),
  ch CHAR(3) DEFAULT 'abc')"""
ALL_TYPES_ROW = """INSERT INTO codec_types VALUES (-5, 65535, -8000000, 2000000000,
  18446744073709551615, 1.5, -2.25, 12.345, '0000-00-00', '2024-02-29 23:59:59.123456',
  '-838:59:59.000000', '2038-01-19 03:14:07', 2155, b'1010101010', 'b', 'x,y', '{\\"k\\": 1}',
  x'00ff', POINT(1, 2), 'vc', 'c'), (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"""


def _raw_session(port: int, capabilities: int) -> None:
    c = RawClient(port, capabilities)
    c.command(b"\x03DROP TABLE IF EXISTS codec_types, codec_fl")
    c.command(b"\x03DROP PROCEDURE IF EXISTS codec_p")
    c.command(b"\x03CREATE PROCEDURE codec_p() BEGIN SELECT 1 AS x; SELECT 2 AS y, 3 AS z; END")
    c.command(b"\x03" + ALL_TYPES_TABLE.encode())
    c.command(b"\x03" + ALL_TYPES_ROW.encode())
    c.command(b"\x03SELECT 1 AS a, 'x' AS b")
    c.command(b"\x03SELECT 1; SELECT 2")
    c.command(b"\x03CALL codec_p()")
    c.command(b"\x03DO 1")
    c.command(b"\x03SELECT * FROM no_such_table")
    c.command(b"\x03SELECT * FROM codec_types")
    c.command(b"\x03USE mysql")
    c.command(b"\x03USE test")
    c.command(b"\x04codec_types\x00")
    c.command(b"\x04no_such_table\x00")
    c.command(b"\x09")
    c.command(b"\x1b\x01\x00")
    c.command(b"\x1b\x00\x00")
    c.command(b"\x0e")
    c.command(b"\x02test")
    c.command(b"\x02no_such_db")
    c.command(b"\x0c\xff\xff\xff\x00")
    # LOAD DATA LOCAL: request, the file in two packets, the empty end, then OK.
    c.command(b"\x03CREATE TEMPORARY TABLE codec_in (a INT, b TEXT)")
    c.send(b"\x03LOAD DATA LOCAL INFILE 'codec.tsv' INTO TABLE codec_in")
    c.read()
    c.send(b"1\tone\n", 2)
    c.send(b"2\ttwo\n", 3)
    c.send(b"", 4)
    c.read()
    # Prepared statements: all types, a cursor with fetches, long data, no result.
    prep = c.command(b"\x16SELECT * FROM codec_types WHERE t = ? OR t IS NULL OR ? = 1")
    ok = StmtPrepareOK.parse(prep[0].payload)
    execute = stmt_execute(ok.statement_id, [-5, 0])
    c.command(execute.encode())
    c.command(execute.encode())  # again: with CACHE_METADATA the definitions are skipped
    prep = c.command(b"\x16SELECT seq FROM seq_1_to_5 WHERE seq > ?")
    ok = StmtPrepareOK.parse(prep[0].payload)
    cursor = stmt_execute(ok.statement_id, [1], flags=1)
    c.command(cursor.encode())
    c.command(ComStmtFetch(ok.statement_id, 2).encode())
    c.command(ComStmtFetch(ok.statement_id, 10).encode())
    c.command(ComStmtReset(ok.statement_id).encode())
    c.send(ComStmtClose(ok.statement_id).encode())
    prep = c.command(b"\x16SELECT ?")
    ok = StmtPrepareOK.parse(prep[0].payload)
    c.send(ComStmtSendLongData(ok.statement_id, 0, b"long ").encode())
    c.send(ComStmtSendLongData(ok.statement_id, 0, b"data").encode())
    c.command(ComStmtExecute(ok.statement_id, 0, 1, [SENT_AS_LONG_DATA],
                             [(FieldType.BLOB, False)]).encode())
    prep = c.command(b"\x16DO ?")
    ok = StmtPrepareOK.parse(prep[0].payload)
    c.command(stmt_execute(ok.statement_id, [1]).encode())
    c.command(b"\x16SELECT * FROM no_such_table")
    c.command(b"\x1f")
    # COM_CHANGE_USER: MariaDB answers with an auth switch; the empty password's answer.
    c.send(ComChangeUser(b"root", b"", b"test", 45, "mysql_native_password", {b"a": b"b"}).encode(
        capabilities))
    c.read()
    c.send(b"", 2)
    c.read()
    c.command(b"\x03DROP PROCEDURE codec_p")
    c.command(b"\x03DROP TABLE codec_types")
    c.close()


_RAW_BASE = int(
    Capability.LONG_PASSWORD | Capability.LONG_FLAG | Capability.CONNECT_WITH_DB
    | Capability.LOCAL_FILES | Capability.PROTOCOL_41 | Capability.TRANSACTIONS
    | Capability.SECURE_CONNECTION | Capability.MULTI_STATEMENTS | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS | Capability.PLUGIN_AUTH | Capability.CONNECT_ATTRS
    | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
)
#: Like libmysqlclient 8: DEPRECATE_EOF and SESSION_TRACK; plus MariaDB's extensions,
#: like libmariadb (CLIENT_MYSQL unset so the extended bits travel).
_RAW_MODERN = (
    (_RAW_BASE & ~int(Capability.LONG_PASSWORD))
    | int(Capability.DEPRECATE_EOF | Capability.SESSION_TRACK)
    | int(Capability.MARIADB_CLIENT_CACHE_METADATA | Capability.MARIADB_CLIENT_EXTENDED_METADATA
          | Capability.MARIADB_CLIENT_PROGRESS)
)


def run_raw_classic(port: int) -> None:
    _raw_session(port, _RAW_BASE)


def run_raw_modern(port: int) -> None:
    _raw_session(port, _RAW_MODERN)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=3306)
    args = parser.parse_args()
    backend = ("127.0.0.1", args.port)
    for name, run in [
        ("pymysql", run_pymysql),
        ("connector", run_connector),
        ("mysqlclient", run_mysqlclient),
        ("mariadb_cli", run_cli),
        ("raw_classic", run_raw_classic),
        ("raw_modern", run_raw_modern),
    ]:
        record(name, run, backend)


if __name__ == "__main__":
    main()
