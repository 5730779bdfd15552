"""sysbench through an upgrade: its connections never reconnect and run queries back to
back, so each one must move between two of its commands, with its server connection
(server-side prepared statements included: ``--db-ps-mode=auto``), and none may fail.

sysbench is installed by scripts/lib/setup.sh.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.proxy.test_upgrade import MODES, Upgradable, handed_over, upgradable
from tests.support.chassis_proc import is_alive, wait_for
from tests.support.mariadb import MariaDB

__all__ = ["upgradable"]

THREADS = 8
SECONDS = 12


def sysbench(port: int, *args: str) -> list[str]:
    tool = shutil.which("sysbench")
    assert tool, "sysbench is missing: scripts/lib/setup.sh installs it"
    return [tool, "oltp_point_select", "--db-driver=mysql", "--mysql-host=127.0.0.1",
            f"--mysql-port={port}", "--mysql-user=root", "--mysql-password=",
            "--mysql-db=sbtest", "--tables=1", "--table-size=1000", *args]


@pytest.fixture(scope="module")
def prepared(mariadb: MariaDB) -> MariaDB:
    subprocess.run(sysbench(mariadb.port, "cleanup"), capture_output=True, check=False)
    subprocess.run(sysbench(mariadb.port, "prepare"), capture_output=True, check=True)
    return mariadb


def busy(u: Upgradable) -> bool:
    """sysbench's threads are all connected (through the proxy): they query at once."""
    rows = u.mariadb.sql("SELECT COUNT(*) FROM information_schema.processlist "
                         "WHERE db = 'sbtest'")
    return int(rows[0][0]) >= THREADS


def upgrade_during(u: Upgradable, extra: Sequence[str], upgrades: int = 1) -> str:
    """Run sysbench for SECONDS through the proxy, upgrading after a few seconds."""
    run = subprocess.Popen(
        sysbench(u.port, f"--threads={THREADS}", f"--time={SECONDS}", "--report-interval=0",
                 *extra, "run"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(upgrades):
            wait_for(lambda: busy(u), 30, f"{THREADS} sysbench connections at work")
            old = u.pid()
            assert old is not None
            os.kill(old, signal.SIGUSR2)
            wait_for(lambda old=old: (p := u.pid()) and p != old, 30, "the new pid file")
            wait_for(lambda old=old: not is_alive(old), 30, "the old chassis to exit")
        out, _ = run.communicate(timeout=SECONDS + 60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out
    return out


@pytest.mark.parametrize("mode", ["single", "keepalive-2-workers"])
def test_sysbench_runs_through_an_upgrade_without_an_error(
        upgradable: Upgradable, prepared: MariaDB, mode: str) -> None:
    u = upgradable
    u.start(*MODES[mode], "log-level=message")
    out = upgrade_during(u, ())
    errors = int(re.search(r"ignored errors:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    reconnects = int(re.search(r"reconnects:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    queries = int(re.search(r"queries:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert (errors, reconnects) == (0, 0), out
    assert queries > 0
    moving, staying = handed_over(u.log_text())
    assert (moving, staying) == (THREADS, 0), u.log_text()
    assert "still open at the shutdown deadline" not in u.log_text()


def test_sysbench_survives_two_upgrades_in_a_row(upgradable: Upgradable,
                                                prepared: MariaDB) -> None:
    u = upgradable
    u.start("log-level=message")
    out = upgrade_during(u, (), upgrades=2)
    assert re.search(r"ignored errors:\s+0\b", out), out
    assert Path(u.log).read_text().count("handing over 8 connections, draining 0") == 2
