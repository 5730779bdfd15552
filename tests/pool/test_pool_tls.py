"""The pool keeps the security of each server connection's leg.

Under ``--proxy-backend-ssl-mode=as_client`` (the default) a server connection opened for
a TLS client has a TLS leg: handed to a plaintext client it would let that client pass
for a TLS one (``REQUIRE SSL``), and the other way round a TLS client's traffic would
cross the backend leg in clear. A pooled connection only goes to a client whose leg
calls for the same; when that is not known before the login (TLS preferred), the client
gets a new connection.
"""

from __future__ import annotations

from typing import Any

import pymysql
import pytest

from tests.pool.conftest import POOL_ON_DISCONNECT, PoolProxyFactory, rows
from tests.support.certs import TLSCerts
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(60)


def conn_id(conn: Any) -> int:
    return int(rows(conn, "SELECT CONNECTION_ID()")[0][0])


def ssl_cipher(conn: Any) -> str:
    return str(rows(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")[0][1])


def tls_args(tls_certs: TLSCerts, *extra: str) -> list[str]:
    return [f"--proxy-ssl-cert={tls_certs.proxy_cert}", f"--proxy-ssl-key={tls_certs.proxy_key}",
            f"--proxy-backend-ssl-ca={tls_certs.ca_cert}", *extra]


def test_a_pooled_tls_connection_is_never_handed_to_a_plaintext_client(
        pool_proxy: PoolProxyFactory, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT, tls_args(tls_certs))
    tls = {"ca": str(tls_certs.ca_cert)}
    with proxy.connect("native", ssl=tls) as first:
        tid = conn_id(first)
        assert ssl_cipher(first) != ""
    proxy.wait_log("pooled the server connection")
    with proxy.connect("native", ssl_disabled=True) as plain:
        assert conn_id(plain) != tid
        assert ssl_cipher(plain) == ""
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect("tlsonly", ssl_disabled=True)
    assert info.value.args[0] == 1045


def test_tls_clients_share_pooled_tls_connections_when_tls_is_required(
        pool_proxy: PoolProxyFactory, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    proxy = pool_proxy(POOL_ON_DISCONNECT, tls_args(tls_certs, "--proxy-ssl-mode=required"))
    tls = {"ca": str(tls_certs.ca_cert)}
    with proxy.connect("native", ssl=tls) as first:
        tid = conn_id(first)
    proxy.wait_log("pooled the server connection")
    with proxy.connect("tlsonly", ssl=tls) as second:
        assert conn_id(second) == tid  # the pooled TLS connection, logged in anew
        assert rows(second, "SELECT CURRENT_USER()") == [("tlsonly@%",)]
        assert ssl_cipher(second) != ""
