"""Counters a worker keeps per backend and in total, for the admin console.

Plain integer attributes: the relay adds to them on its hot path, so no locks, no
objects per event. With several workers each counts its own; the admin plugin sums.
"""

from __future__ import annotations


class Counters:
    """Connections, commands, errors and bytes seen by one worker."""

    __slots__ = ("bytes_in", "bytes_out", "connections", "errors", "queries")

    def __init__(self) -> None:
        self.connections = 0  # client connections handed to a backend (or accepted, in total)
        self.queries = 0  # client commands (in relay mode: buffers that start a command)
        self.errors = 0  # connect failures, ERR answers seen, connections lost
        self.bytes_in = 0  # from clients
        self.bytes_out = 0  # to clients

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
