"""Session fixtures every test directory may use: ``tls_certs``, ``mariadb``, ``pp_mariadb``,
``sha2_server``.

All are lazy: a test that asks for none of them (the process and codec tests) starts
no server. Under pytest-xdist each worker is its own session, so each gets its own
server on its own port and directory.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The support modules are imported as ``tests.support.*`` (also by scripts run from the
# repository root); pytest's rootdir-relative import does not put the root on sys.path.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support.certs import TLSCerts, make_tls_certs  # noqa: E402
from tests.support.mariadb import MariaDB  # noqa: E402
from tests.support.sha2_server import Sha2Server  # noqa: E402


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TLSCerts:
    """A CA with server, proxy and client certificates (PEM paths), made for this session."""
    return make_tls_certs(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def mariadb(tls_certs: TLSCerts) -> Iterator[MariaDB]:
    """One throwaway MariaDB for the session (per xdist worker), TLS with ``tls_certs``.

    Shared: tests should use their own tables or databases, and leave globals as found.
    """
    with MariaDB(certs=tls_certs) as db:
        yield db


@pytest.fixture(scope="session")
def pp_mariadb(tls_certs: TLSCerts) -> Iterator[MariaDB]:
    """A MariaDB that takes PROXY headers from 127.0.0.1 (where chassis runs), with
    accounts granted from one 127.0.0.x address each: ``from2``/``pw2`` from 127.0.0.2,
    ``from3``/``pw3`` from 127.0.0.3, ``either``/``pwe`` from 127.0.0.%.

    Shared by the PROXY protocol tests (tests/proxy) and the fleet tests (tests/fleet).
    """
    with MariaDB(certs=tls_certs, extra_args=["--proxy-protocol-networks=127.0.0.1/32"],
                 name="mariadb-pp") as db:
        db.sql("CREATE USER 'from2'@'127.0.0.2' IDENTIFIED BY 'pw2'")
        db.sql("CREATE USER 'from3'@'127.0.0.3' IDENTIFIED BY 'pw3'")
        db.sql("CREATE USER 'either'@'127.0.0.%' IDENTIFIED BY 'pwe'")
        yield db


@pytest.fixture(scope="session")
def sha2_server(tls_certs: TLSCerts) -> Iterator[Sha2Server]:
    """A small caching_sha2_password server (MariaDB has none), TLS with ``tls_certs``.

    Its account ``sha2`` / ``sha2_pw``; ``sha2_server.auth_log`` records which path each
    login took, and ``forget()`` empties its cache to force full authentication.
    """
    with Sha2Server(certs=tls_certs) as server:
        yield server
