"""Fixtures for the proxy tests: a running chassis in front of the test MariaDB.

``proxy`` is shared by the tests of a session (one chassis, TLS offered to clients with
the test CA's proxy certificate); tests that need other options start their own with
``start_proxy``. Every chassis started here is stopped at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.support.certs import TLSCerts
from tests.support.chassis_proc import ChassisProcess, free_port, start_chassis, wait_for
from tests.support.mariadb import ACCOUNTS, MariaDB


@dataclass
class Proxy:
    """A chassis running the proxy plugin, and how to reach it."""

    process: ChassisProcess
    host: str
    port: int
    log_file: Path

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """The log once it holds ``text``: lines about a client may land after its answer."""
        return wait_for(lambda: text in (log := self.log_text()) and log, timeout, f"log line {text!r}")

    def worker_pid(self) -> int:
        workers = self.process.workers()
        assert len(workers) == 1, workers
        return workers[0]

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.worker_pid()}/fd"))

    def connect(self, user: str = "root", **kwargs: Any) -> pymysql.Connection[Any]:
        """PyMySQL through the proxy, as one of the test server's accounts."""
        account = ACCOUNTS.get(user)
        kwargs.setdefault("password", account.password if account else "")
        kwargs.setdefault("connect_timeout", 10)
        kwargs.setdefault("read_timeout", 30)
        kwargs.setdefault("autocommit", True)
        return pymysql.connect(host=self.host, port=self.port, user=user, **kwargs)


def proxy_args(port: int, log_file: Path, backends: Sequence[str],
               extra: Sequence[str] = ()) -> list[str]:
    args = ["--plugins=proxy", f"--proxy-address=127.0.0.1:{port}",
            f"--log-file={log_file}", "--log-level=debug"]
    args += [f"--proxy-backend-addresses={b}" for b in backends]
    return args + list(extra)


StartProxy = Callable[..., Proxy]


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[StartProxy]:
    """``start_proxy(backends, extra_args)`` -> a ready :class:`Proxy`, stopped at teardown."""
    started: list[ChassisProcess] = []

    def start(backends: Sequence[str], extra: Sequence[str] = (), *, port: int | None = None,
              **kwargs: Any) -> Proxy:
        port = port or free_port()
        log_file = tmp_path / f"chassis-{len(started)}.log"
        process = start_chassis(proxy_args(port, log_file, backends, extra), **kwargs)
        started.append(process)
        return Proxy(process, "127.0.0.1", port, log_file)

    yield start
    for process in started:
        process.stop(timeout=10)


@pytest.fixture(scope="session")
def proxy(mariadb: MariaDB, tls_certs: TLSCerts,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """One chassis for the session in front of ``mariadb``, offering TLS to clients; its
    backend leg is always plain TCP (the tests show what the server sees of each leg)."""
    port = free_port()
    log_file = tmp_path_factory.mktemp("proxy") / "chassis.log"
    extra = [f"--proxy-ssl-cert={tls_certs.proxy_cert}", f"--proxy-ssl-key={tls_certs.proxy_key}",
             "--proxy-backend-ssl-mode=disabled"]
    process = start_chassis(proxy_args(port, log_file, [mariadb.address], extra))
    try:
        yield Proxy(process, "127.0.0.1", port, log_file)
    finally:
        process.stop(timeout=10)
