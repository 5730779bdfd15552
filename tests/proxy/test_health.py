"""Background health checks: a DOWN backend comes back UP without any client asking."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chassis_mysql.constants import Capability
from chassis_mysql.handshake import HandshakeV10
from chassis_mysql.packets import err_packet

from tests.proxy.conftest import StartProxy
from tests.support.chassis_proc import free_port, wait_for
from tests.support.fake_backend import Greeter
from tests.support.mariadb import MariaDB

HANDSHAKE = HandshakeV10(
    server_version="10.11.0-fake", connection_id=1, auth_plugin_data=b"abcdefgh" * 2 + b"ijkl",
    capabilities=Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH,
).encode()


@pytest.fixture
def greeters() -> Iterator[list[Greeter]]:
    started: list[Greeter] = []
    yield started
    for g in started:
        g.close()


def test_down_backend_is_probed_and_marked_up(
        start_proxy: StartProxy, mariadb: MariaDB, greeters: list[Greeter]) -> None:
    dead = free_port()
    proxy = start_proxy([f"127.0.0.1:{dead}", mariadb.address],
                        ["--proxy-health-check-interval=0.2", "--proxy-connect-timeout=1"])
    with proxy.connect() as conn, conn.cursor() as cur:  # fails over to the second backend
        cur.execute("SELECT @@port")
        assert cur.fetchone() == (mariadb.port,)
    wait_for(lambda: f"backend 127.0.0.1:{dead}: UNKNOWN -> DOWN" in proxy.log_text(), 10, "DOWN")
    greeters.append(Greeter(dead, HANDSHAKE))
    wait_for(lambda: f"backend 127.0.0.1:{dead}: DOWN -> UP (health check: the server greets again)"
             in proxy.log_text(), 10, "the health check to bring it UP")
    assert greeters[0].greeted >= 1


def test_backend_greeting_with_an_error_stays_down_with_that_reason(
        start_proxy: StartProxy, mariadb: MariaDB, greeters: list[Greeter]) -> None:
    busy = free_port()
    proxy = start_proxy([f"127.0.0.1:{busy}", mariadb.address],
                        ["--proxy-health-check-interval=0.2", "--proxy-connect-timeout=1"])
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    greeters.append(Greeter(busy, err_packet(1040, "Too many connections", "08004")))
    wait_for(lambda: "still down: greeted with error 1040: Too many connections" in proxy.log_text(),
             10, "the probe's reason in the log")
    assert f"127.0.0.1:{busy}: DOWN -> UP" not in proxy.log_text()
