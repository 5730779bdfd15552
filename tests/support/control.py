"""Ask a running chassis' workers over its control channel, as the admin plugin does."""

from __future__ import annotations

import json
import socket
from typing import Any


def ask(group_id: int, worker_id: int, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """One worker's reply to ``request`` (``group_id``: the angel's pid, or the lone worker's)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(f"\0chassis-control-{group_id}-{worker_id}")
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    reply: dict[str, Any] = json.loads(data)
    return reply


def ask_all(group_id: int, workers: int, request: dict[str, Any]) -> list[Any]:
    """Every worker's results (the plugins' answers), in worker order; a worker's error raises."""
    out = []
    for worker_id in range(workers):
        reply = ask(group_id, worker_id, request)
        assert "error" not in reply, reply
        out.extend(reply["results"])
    return out
