"""The scripted mode's stream pump, whatever pieces the server's bytes arrive in.

A relay between the proxy and the test MariaDB hands the server's bytes on a few at a
time (1 to 7 bytes per send, with a pause, so the proxy reads them separately): packet
headers, rows and terminators split anywhere must still reach the client whole and in
order, and the next command must start only after the response ended.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import mysql.connector
import pymysql
import pytest
from chassis_proxy.digests import DigestTable
from chassis_proxy.queries import QueryRecorder
from pymysql.constants import CLIENT

from tests.proxy.inproc import Hooks, InProcessProxy, PyScriptHost
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(120)


class Dribbler:
    """A TCP relay in front of ``backend`` that sends the server's bytes in small pieces."""

    def __init__(self, backend: tuple[str, int], seed: int = 7) -> None:
        self.backend = backend
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.random = random.Random(seed)
        self.pieces = 0
        self.closed = False
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.backend)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, dribble: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not dribble:
                    dst.sendall(data)
                    continue
                pos = 0
                while pos < len(data):
                    n = self.random.randint(1, 7)
                    dst.sendall(data[pos : pos + n])
                    self.pieces += 1
                    pos += n
                    time.sleep(0.0002)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def dribbled_proxy(mariadb: MariaDB) -> Iterator[tuple[InProcessProxy, Dribbler]]:
    dribbler = Dribbler((mariadb.host, mariadb.port))
    proxy = InProcessProxy([f"127.0.0.1:{dribbler.port}"], PyScriptHost(Hooks))
    proxy.__enter__()
    try:
        yield proxy, dribbler
    finally:
        proxy.__exit__()
        dribbler.close()


def test_responses_split_anywhere_reach_the_client_whole(
    dribbled_proxy: tuple[InProcessProxy, Dribbler],
) -> None:
    proxy, dribbler = dribbled_proxy
    conn = pymysql.connect(host="127.0.0.1", port=proxy.port, user="root", password="",
                           database="test", autocommit=True, connect_timeout=10, read_timeout=60,
                           client_flag=CLIENT.MULTI_STATEMENTS)
    with conn, conn.cursor() as cur:
        before = dribbler.pieces
        cur.execute("SELECT seq, REPEAT('x', seq) FROM seq_1_to_40")
        assert cur.fetchall() == tuple((i, "x" * i) for i in range(1, 41))
        cur.execute("DO 1")  # a lone OK
        with pytest.raises(pymysql.err.ProgrammingError):
            cur.execute("SELECT * FROM no_such_table")  # an ERR
        cur.execute("SELECT 1; SELECT 2, 3")  # two result sets chained
        assert cur.fetchall() == ((1,),)
        assert cur.nextset() and cur.fetchall() == ((2, 3),)
        cur.execute("SELECT 'after'")
        assert cur.fetchall() == (("after",),)
        assert dribbler.pieces - before > 100  # the responses really came in pieces


def test_binary_results_split_anywhere_reach_the_client_whole(
    dribbled_proxy: tuple[InProcessProxy, Dribbler],
) -> None:
    proxy, _ = dribbled_proxy
    conn: Any = mysql.connector.connect(host="127.0.0.1", port=proxy.port, user="root",
                                        password="", database="test", use_pure=True,
                                        connection_timeout=10)
    try:
        cur = conn.cursor(prepared=True)
        for n in (1, 5, 30):
            cur.execute("SELECT seq, seq * 2 FROM seq_1_to_100 WHERE seq <= ?", (n,))
            assert cur.fetchall() == [(i, i * 2) for i in range(1, n + 1)]
        cur.close()
    finally:
        conn.close()


def test_repeated_queries_split_anywhere_reach_the_client_whole(mariadb: MariaDB) -> None:
    """With digests on, a repeated query's answer is recorded as the relay does
    (StreamPump.on_recorded); when its first buffer is a few bytes, the rest still reaches
    the client whole, and every query is counted."""
    dribbler = Dribbler((mariadb.host, mariadb.port))
    digests = DigestTable()
    with contextlib.ExitStack() as stack:
        stack.callback(dribbler.close)
        proxy = stack.enter_context(InProcessProxy([f"127.0.0.1:{dribbler.port}"],
                                                   PyScriptHost(Hooks),
                                                   recorder=QueryRecorder(digests, None)))
        _repeat_queries(proxy, dribbler)
    rows = {row["digest_text"]: row for row in digests.as_rows()}
    point = rows["select seq, repeat(?, seq) from seq_1_to_100 where seq = ?"]
    assert (point["count"], point["rows_sent"]) == (40, 40)
    same = rows["select ?"]
    assert (same["count"], same["rows_sent"]) == (20, 20)


def _repeat_queries(proxy: InProcessProxy, dribbler: Dribbler) -> None:
    conn: Any = mysql.connector.connect(host="127.0.0.1", port=proxy.port, user="root",
                                        password="", database="test", use_pure=True,
                                        connection_timeout=10)
    try:
        cur = conn.cursor(prepared=True)
        before = dribbler.pieces
        for i in range(1, 41):
            cur.execute("SELECT seq, REPEAT('y', seq) FROM seq_1_to_100 WHERE seq = ?", (i,))
            assert cur.fetchall() == [(i, "y" * i)]
        plain = conn.cursor()
        for _ in range(20):
            plain.execute("SELECT 'same text'")
            assert plain.fetchall() == [("same text",)]
        assert dribbler.pieces - before > 100
        cur.close()
    finally:
        conn.close()
