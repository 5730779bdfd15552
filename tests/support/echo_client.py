"""Talk to the echo test plugin: one line out, one line back."""

from __future__ import annotations

import json
import socket
from typing import Any


def ask(port: int, line: str, *, host: str = "127.0.0.1", timeout: float = 5.0) -> str:
    """Send ``line`` on a new connection and return the answer line (without newline)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(line.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode().rstrip("\n")


def whoami(port: int, **kwargs: Any) -> dict[str, Any]:
    """The serving worker's credentials, pid, umask, cwd (the echo plugin's ``whoami``)."""
    result: dict[str, Any] = json.loads(ask(port, "whoami", **kwargs))
    return result
