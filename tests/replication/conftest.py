"""Fixtures for the replication-aware proxy tests: a real GTID topology (one primary, two
replicas, see :mod:`tests.support.replication`) shared by the session, and chassis
processes in front of it.

``topology`` starts the three servers once per session (per xdist worker); ``topo`` hands
it to one test after putting it back as it started (``servers[0]`` the primary, every
replica running and caught up), so a test may stop threads or switch over freely.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.proxy.conftest import start_proxy  # noqa: F401  (fixture)
from tests.support.certs import TLSCerts
from tests.support.replication import Topology


@pytest.fixture(scope="session")
def topology(tls_certs: TLSCerts) -> Iterator[Topology]:
    with Topology(certs=tls_certs) as topo:
        yield topo


@pytest.fixture
def topo(topology: Topology) -> Topology:
    topology.restore()
    return topology
