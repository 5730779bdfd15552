"""The admin console's metrics (``chassis_metrics``) and readiness (``chassis_ready``)."""

from __future__ import annotations

from typing import Any

from chassis.metrics import Metric, gauge


def collect(server: Any) -> list[Metric]:
    """This worker's console: whether it listens and the consoles connected now."""
    listening = getattr(server, "_server", None) is not None
    sessions = len(getattr(server, "_tasks", ()))
    return [
        gauge("chassis_admin_listening", "1 while the admin console's listener is open.",
              [({}, int(listening))], aggregate="max"),
        gauge("chassis_admin_connections", "Admin console connections open now.", [({}, sessions)]),
    ]


def not_ready(server: Any, worker_id: int) -> str | None:
    if server is None or getattr(server, "_server", None) is None:
        return f"worker {worker_id + 1}: the admin listener is not open"
    return None
