"""Counters of a worker's proxy and of each backend, for the admin plugin.

Only events outside the hot path are counted (connections, logins, backend connects):
the relay itself never touches a counter, so it stays as fast as a bare relay.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class ProxyStats:
    """Totals since the worker started."""

    connections_total: int = 0  # clients accepted and served
    connections_refused: int = 0  # over --proxy-max-connections, or while stopping
    logins_failed: int = 0  # the server (or a script) refused the login
    no_backend: int = 0  # clients turned away because every backend was down

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class BackendStats:
    """Totals for one backend since the worker started."""

    connections_total: int = 0  # successful connects
    connect_failures: int = 0  # refused, timed out or no handshake

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
