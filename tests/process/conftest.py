"""Fixtures for the process tests: real chassis processes with the echo plugin.

``chassis_factory`` lives in :mod:`tests.support.chassis_proc`; another suite gets it
the same way, by importing it into its own conftest.py.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.chassis_proc import chassis_factory, free_port

__all__ = ["EchoSetup", "chassis_factory", "echo", "workdir"]

#: Restart quickly in tests that do not measure the delay itself.
FAST_RESTART = {"CHASSIS_RESTART_DELAY_MIN": "0.1"}


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A scratch directory that ``nobody`` can enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="chassis-proc-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class EchoSetup:
    """The echo plugin on a free port, logging at ``message`` level to ``log``."""

    port: int
    log: Path
    dir: Path

    def args(self, *extra: str) -> list[str]:
        return ["--plugins=echo", f"--echo-address=127.0.0.1:{self.port}",
                f"--log-file={self.log}", "--log-level=message", *extra]


@pytest.fixture
def echo(workdir: Path) -> EchoSetup:
    return EchoSetup(port=free_port(), log=workdir / "chassis.log", dir=workdir)


def write_defaults(path: Path, **options: str) -> None:
    """A defaults-file with ``options`` under ``[mysql-proxy]`` (``echo_prefix`` -> ``echo-prefix``)."""
    text = "[mysql-proxy]\n" + "".join(f"{k.replace('_', '-')}={v}\n" for k, v in options.items())
    path.write_text(text)
    path.chmod(0o600)


def echo_line(port: int, line: bytes = b"hi") -> bytes:
    """One line through the echo plugin on a new connection, and its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(line + b"\n")
        return sock.makefile("rb").readline().rstrip(b"\n")
