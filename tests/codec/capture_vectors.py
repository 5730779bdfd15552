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

from chassis_mysql.framing import PacketReader

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
    ]:
        record(name, run, backend)


if __name__ == "__main__":
    main()
