"""Counters a worker keeps per backend and in total, for the admin console and the metrics.

Plain integer attributes: the relay adds to them on its hot path, so no locks, no
objects per event. With several workers each counts its own; the admin plugin and the
chassis' metrics endpoint sum.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

#: Upper bounds (seconds) of the query latency histogram's buckets.
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Why a client was refused or dropped before it was served: the ``reason`` label.
REFUSALS = ("max_connections", "shutting_down", "no_backend", "login_failed", "login_timeout",
            "proxy_protocol")


class Latency:
    """A histogram of command times: one plain count per bucket, filled with bisect."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BOUNDS) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.sum += seconds

    def observe_sorted(self, times: Sequence[float], total: float) -> None:
        """Many times at once (sorted, summing to ``total``): what ``observe`` of each would
        count, found with one bisect per bucket."""
        counts = self.counts
        below = 0
        for i, bound in enumerate(LATENCY_BOUNDS):
            upto = bisect_right(times, bound)  # observe's bucket: the first bound >= seconds
            counts[i] += upto - below
            below = upto
        counts[-1] += len(times) - below
        self.sum += total


class Counters:
    """Connections, commands, errors and bytes seen by one worker."""

    __slots__ = ("by_command", "bytes_in", "bytes_out", "connections", "errors", "latency",
                 "queries", "refused", "server_errors")

    #: What the admin console's tables show.
    SHOWN = ("bytes_in", "bytes_out", "connections", "errors", "queries")

    def __init__(self) -> None:
        self.connections = 0  # client connections handed to a backend (or accepted, in total)
        self.queries = 0  # client commands (in relay mode: buffers that start a command)
        self.errors = 0  # connect failures, ERR answers seen, connections lost
        self.bytes_in = 0  # from clients
        self.bytes_out = 0  # to clients
        self.refused = dict.fromkeys(REFUSALS, 0)  # clients refused, by reason (in total only)
        self.latency = Latency()  # commands answered by a backend, timed (per backend only)
        #: Commands sent to a backend, by COM_ code (per backend only; followed commands:
        #: with a script, or with digests or the slow log on).
        self.by_command = [0] * 256
        self.server_errors = 0  # ERR answers of a backend to followed commands (per backend)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.SHOWN}
