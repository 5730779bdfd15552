"""Login bursts: the listen backlog holds a burst of clients until the worker accepts them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.proxy.conftest import StartProxy
from tests.support.burst import burst, read_greetings
from tests.support.mariadb import MariaDB

BURST = 400


@pytest.fixture
def many_server_connections(mariadb: MariaDB) -> Iterator[None]:
    """The server's max_connections raised for the burst, and set back afterwards."""
    (before,), = mariadb.sql("SELECT @@GLOBAL.max_connections")
    mariadb.sql(f"SET GLOBAL max_connections = {BURST * 2 + 50}")
    yield
    mariadb.sql(f"SET GLOBAL max_connections = {int(before)}")


def test_a_burst_of_400_logins_all_get_a_greeting(
        start_proxy: StartProxy, mariadb: MariaDB, many_server_connections: None) -> None:
    proxy = start_proxy([mariadb.address], ["--log-level=message"])
    # asyncio's default backlog (100) dropped the SYNs of every client past it
    with burst(proxy.worker_pid(), proxy.port, BURST) as socks:
        greetings = read_greetings(socks, timeout=60)
    missing = [s for s, data in greetings.items() if len(data) < 5]
    assert not missing, f"{len(missing)} of {BURST} clients got no greeting"
    # a MySQL handshake: 3-byte length, sequence id 0, protocol version 10
    assert all(data[3] == 0 and data[4] == 10 for data in greetings.values())
