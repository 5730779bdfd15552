"""``--user`` drops privileges only after every module the plugins need is imported.

Run from a place the target user cannot read (a virtual environment under root's home,
mode 0700): whatever a plugin imported lazily after the drop would fail there. The
project's packages are copied into such a directory and put first on the path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest

from tests.support.chassis_proc import ChassisProcess, free_port
from tests.support.mariadb import MariaDB

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

Factory = Callable[..., ChassisProcess]


@pytest.fixture
def private_copy(tmp_path: Path) -> Path:
    """The project's packages in a directory only root may enter."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "chassis", private / "chassis", ignore=ignore)
    for package in ("chassis_proxy", "chassis_mysql", "chassis_admin"):
        shutil.copytree(ROOT / "plugins" / package, private / "plugins" / package, ignore=ignore)
    private.chmod(0o700)
    return private


def test_everything_is_imported_before_the_privileges_are_dropped(
        chassis_factory: Factory, private_copy: Path, tmp_path: Path, mariadb: MariaDB) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o777)
    script = logs / "count.lua"
    script.write_text("local tokenizer = require(\"proxy.tokenizer\")\n"
                      "function read_query(packet)\n"
                      "  if packet:byte() == proxy.COM_QUERY then proxy.global.n = (proxy.global.n or 0) + 1 end\n"
                      "end\n")
    script.chmod(0o644)
    pw = logs / "admin.pw"
    pw.write_text("admin secret\n")
    pw.chmod(0o600)
    proxy_port, scripted_port, admin_port = free_port(), free_port(), free_port()
    env = {"PYTHONPATH": f"{private_copy}:{private_copy / 'plugins'}", "PYTHONDONTWRITEBYTECODE": "1"}
    common = ["--user=nobody", f"--proxy-backend-addresses={mariadb.address}"]
    plain = chassis_factory([*common, "--plugins=proxy,admin", f"--proxy-address=127.0.0.1:{proxy_port}",
                             f"--admin-address=127.0.0.1:{admin_port}", "--admin-username=admin",
                             f"--admin-password-file={pw}", f"--log-file={logs / 'plain.log'}"], env=env)
    scripted = chassis_factory([*common, "--plugins=proxy", f"--proxy-address=127.0.0.1:{scripted_port}",
                                f"--proxy-lua-script={script}", f"--log-file={logs / 'scripted.log'}"],
                               env=env)
    # The worker runs as nobody, from the private copy.
    for process in (plain, scripted):
        worker = process.workers()[0] if process.workers() else process.pid
        assert os.stat(f"/proc/{worker}").st_uid != 0
    for port in (proxy_port, scripted_port):
        with pymysql.connect(host="127.0.0.1", port=port, user="root", ssl_disabled=True,
                             connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    with pymysql.connect(host="127.0.0.1", port=admin_port, user="admin", password="admin secret",
                         ssl_disabled=True, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM backends")
        assert cur.fetchall()
    for process in (plain, scripted):
        assert "ModuleNotFoundError" not in process.log_text() + process.stderr_text()
