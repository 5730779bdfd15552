"""The default backend choice: least connections among the read/write backends that are up
(MySQL Proxy 0.8.5's rule, issue 10's ``failover`` and issue 14 item 5), fail-over past a
DOWN one.

Two backends are the same MariaDB reached two ways, by TCP and by its unix socket: the
server's process list tells which one a client got (``localhost`` for the socket).
"""

from __future__ import annotations

import urllib.request
from typing import Any

import pymysql
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy.conftest import Proxy, StartProxy
from tests.support.chassis_proc import free_port, wait_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(60)


def via(conn: pymysql.Connection[Any]) -> str:
    """``socket`` or ``tcp``: how the proxy reached the server for this client."""
    with conn.cursor() as cur:
        cur.execute("SELECT host FROM information_schema.processlist WHERE id = CONNECTION_ID()")
        (host,) = cur.fetchone()
    return "socket" if host == "localhost" else "tcp"


def clients_of(metrics: str, backend: str) -> float:
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "chassis_proxy_backend_connections" and s.labels.get("backend") == backend:
                return s.value
    raise AssertionError(f"no chassis_proxy_backend_connections for {backend}:\n{text}")


def _start(start_proxy: StartProxy, backends: list[str]) -> tuple[Proxy, str]:
    metrics = f"127.0.0.1:{free_port()}"
    return start_proxy(backends, [f"--metrics-address={metrics}"]), metrics


def test_clients_go_to_the_backend_with_the_fewest(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    socket_backend = str(mariadb.socket_path)
    proxy, metrics = _start(start_proxy, [mariadb.address, socket_backend])
    conns = [proxy.connect() for _ in range(4)]
    try:
        # a tie goes to the first in --proxy-backend-addresses order, then they alternate
        assert [via(c) for c in conns] == ["tcp", "socket", "tcp", "socket"]
        conns.pop(1).close()  # one client of the socket backend leaves
        wait_for(lambda: clients_of(metrics, socket_backend) == 1, message="the socket backend's count to drop")
        conns.append(proxy.connect())
        assert via(conns[-1]) == "socket"  # 1 client there against 2 on tcp
        conns.append(proxy.connect())
        assert via(conns[-1]) == "tcp"  # 2 and 2: the first
    finally:
        for c in conns:
            c.close()


def test_a_down_backend_is_skipped_and_the_others_share(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proxy, _ = _start(start_proxy, [dead, mariadb.address, str(mariadb.socket_path)])
    conns = [proxy.connect() for _ in range(4)]
    try:
        assert [via(c) for c in conns] == ["tcp", "socket", "tcp", "socket"]
    finally:
        for c in conns:
            c.close()
    assert proxy.log_text().count(f"backend {dead}: UNKNOWN -> DOWN (connection refused)") == 1
