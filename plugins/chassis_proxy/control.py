"""Answers to other workers' control requests (``chassis_control``): the admin plugin's view.

Requests carry ``plugin: "proxy"`` and an ``op``: ``backends`` (state, counters and idle
pooled connections per backend), ``stats`` (this worker's totals) or ``set_backend_state`` (up, down, offline,
unknown). Every worker answers for itself; the admin plugin merges the answers.
"""

from __future__ import annotations

import logging
from typing import Any

from chassis_proxy.hooks import BackendState
from chassis_proxy.service import ProxyService

log = logging.getLogger("chassis.proxy")

_STATES = {"up": BackendState.UP, "down": BackendState.DOWN, "offline": BackendState.OFFLINE,
           "unknown": BackendState.UNKNOWN}


def answer(service: ProxyService, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "backends":
        return {"backends": [
            {
                "ndx": b.index,
                "address": str(b.addr),
                "state": b.state.name.lower(),
                "type": b.type.name.lower(),
                "uuid": b.uuid,
                "connected_clients": b.connected_clients,
                **b.stats.as_dict(),
                "pool_idle": b.pool.idle_count,
            }
            for b in service.backends
        ]}
    if op == "stats":
        return {"stats": {"connections_current": len(service.connections), **service.stats.as_dict(),
                          "pool_idle": sum(b.pool.idle_count for b in service.backends)}}
    if op == "set_backend_state":
        backend = service.backends.by_index(int(request.get("ndx", 0)))
        state = _STATES.get(str(request.get("state")))
        if backend is None:
            return {"ok": False, "message": f"no backend {request.get('ndx')} (see SELECT * FROM backends)"}
        if state is None:
            return {"ok": False, "message": f"unknown state {request.get('state')!r} (up, down, offline)"}
        backend.set_state(state, "set from the admin console")
        return {"ok": True}
    raise ValueError(f"unknown proxy control operation {op!r}")
