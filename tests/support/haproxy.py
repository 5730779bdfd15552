"""A throwaway HAProxy (Debian's ``haproxy``) in TCP mode in front of chassis instances.

``with HAProxy(tmp_path, ["127.0.0.1:4040"], server_options="send-proxy-v2") as lb:``
starts it in the foreground (``-db``) on a free port of 127.0.0.1 and stops it at the end;
``lb.port`` is where clients connect. ``server_options`` go on every server line; a
:class:`Server` gives one server its own (``check port 9104`` for a health check on that
server's metrics port). ``extra`` adds lines to the backend section (health checks,
retries), ``balance`` picks the algorithm, ``global_lines`` go in the global section
(threads, limits: scripts/bench's ``--compare haproxy``).

Its stats socket (admin level) is always on: :meth:`HAProxy.servers_state` reads ``show
stat`` (per-server status and sessions), :meth:`HAProxy.wait_status` awaits a server's
health-check verdict instead of sleeping.
"""

from __future__ import annotations

import csv
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.chassis_proc import free_port, wait_for

STARTUP_TIMEOUT = 15.0
BACKEND = "chassis"


def find_haproxy() -> str:
    for candidate in (shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("haproxy is not installed: scripts/test installs it (apt-get install haproxy)")


@dataclass(frozen=True)
class Server:
    """One server line: ``address`` and the options for it alone (after the shared ones)."""

    address: str
    options: str = ""


class HAProxy:
    """One HAProxy process, its config and stats socket in ``directory``.

    Servers are named ``c0``, ``c1``… in the order given (backend ``chassis``).
    """

    host = "127.0.0.1"

    def __init__(self, directory: Path, servers: Sequence[str | Server], *, server_options: str = "",
                 extra: Sequence[str] = (), balance: str = "roundrobin",
                 global_lines: Sequence[str] = ()) -> None:
        self.directory = directory
        self.servers = [s if isinstance(s, Server) else Server(s) for s in servers]
        self.server_options = server_options
        self.extra = list(extra)
        self.balance = balance
        self.global_lines = list(global_lines) or ["maxconn 256"]
        self.port = 0
        self.config = directory / "haproxy.cfg"
        self.log_file = directory / "haproxy.out"
        self.stats_socket = directory / "haproxy.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    def _config_text(self) -> str:
        lines = [
            "global", *(f"    {line}" for line in self.global_lines),
            f"    stats socket {self.stats_socket} mode 600 level admin",
            "defaults", "    mode tcp", "    timeout connect 5s", "    timeout client 60s",
            "    timeout server 60s",
            "frontend clients", f"    bind {self.host}:{self.port}", f"    default_backend {BACKEND}",
            f"backend {BACKEND}", f"    balance {self.balance}", *(f"    {line}" for line in self.extra),
        ]
        lines += [f"    server c{i} {s.address} {self.server_options} {s.options}".rstrip()
                  for i, s in enumerate(self.servers)]
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
                self.command("show info")  # the stats socket comes a little after
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"haproxy did not listen on {self.host}:{self.port}:\n{self.output()}")

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    @property
    def pid(self) -> int:
        """The running process (0 when stopped): its threads share it."""
        return self._proc.pid if self._proc is not None else 0

    # -- the stats socket ---------------------------------------------------------------

    def command(self, line: str) -> str:
        """One command on the stats socket (``show stat``, ``disable server chassis/c1``)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode(errors="replace")

    def servers_state(self) -> dict[str, dict[str, str]]:
        """``show stat`` for the servers of the backend, by name: ``status`` (``UP``,
        ``DOWN``, ``UP 1/2`` while a check is failing…), ``scur`` (current sessions),
        ``stot`` (sessions so far), ``chkdown`` (UP to DOWN transitions), ``wredis``…"""
        text = self.command("show stat").lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(text.splitlines())
                if row.get("pxname") == BACKEND and row["svname"] not in ("FRONTEND", "BACKEND")}

    def sessions(self) -> dict[str, int]:
        """Current sessions per server (HAProxy's ``scur``)."""
        return {name: int(row["scur"] or 0) for name, row in self.servers_state().items()}

    def wait_status(self, server: str, status: str, timeout: float = 15.0) -> None:
        """Wait until ``server``'s health-check status is exactly ``status`` (``UP``, ``DOWN``)."""
        wait_for(lambda: self.servers_state()[server]["status"] == status, timeout,
                 f"haproxy to see {server} {status}")

    # -- life cycle -----------------------------------------------------------------------

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # hard stop: a test's clients are not waited for
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
