"""A throwaway HAProxy (Debian's ``haproxy``) in TCP mode in front of chassis instances.

``with HAProxy(tmp_path, ["127.0.0.1:4040"], server_options="send-proxy-v2") as lb:``
starts it in the foreground (``-db``) on a free port of 127.0.0.1 and stops it at the end;
``lb.port`` is where clients connect. ``extra`` adds lines to the backend section (health
checks and the like, for fleet tests); ``global_lines`` to the global section (threads,
limits: scripts/bench's ``--compare haproxy``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.chassis_proc import free_port

STARTUP_TIMEOUT = 15.0


def find_haproxy() -> str:
    for candidate in (shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("haproxy is not installed: scripts/test installs it (apt-get install haproxy)")


class HAProxy:
    """One HAProxy process, its config in ``directory``."""

    host = "127.0.0.1"

    def __init__(self, directory: Path, servers: Sequence[str], *, server_options: str = "",
                 extra: Sequence[str] = (), global_lines: Sequence[str] = ()) -> None:
        self.directory = directory
        self.servers = list(servers)
        self.server_options = server_options
        self.extra = list(extra)
        self.global_lines = list(global_lines) or ["maxconn 256"]
        self.port = 0
        self.config = directory / "haproxy.cfg"
        self.log_file = directory / "haproxy.out"
        self._proc: subprocess.Popen[bytes] | None = None

    def _config_text(self) -> str:
        lines = [
            "global", *(f"    {line}" for line in self.global_lines),
            "defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 60s",
            "    timeout server 60s",
            "frontend clients", f"    bind {self.host}:{self.port}", "    default_backend chassis",
            "backend chassis", "    balance roundrobin", *(f"    {line}" for line in self.extra),
        ]
        lines += [f"    server c{i} {addr} {self.server_options}".rstrip()
                  for i, addr in enumerate(self.servers)]
        return "\n".join(lines) + "\n"

    def start(self) -> Self:
        self.port = free_port()
        self.config.write_text(self._config_text())
        out = self.log_file.open("wb")
        self._proc = subprocess.Popen([find_haproxy(), "-db", "-f", str(self.config)],
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self._proc.returncode}:\n{self.output()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"haproxy did not listen on {self.host}:{self.port}:\n{self.output()}")

    @property
    def pid(self) -> int:
        """The running process (0 when stopped): its threads share it."""
        return self._proc.pid if self._proc is not None else 0

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGUSR1)  # soft stop: finish and exit
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
