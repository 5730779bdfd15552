"""What a new user is told: where chassis listens and what it uses, where a daemon's log
goes, and which Lua runtime ``--version`` runs scripts on."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.process.conftest import EchoSetup
from tests.support.chassis_proc import CHASSIS, ChassisProcess, free_port, start_chassis

Factory = Callable[..., ChassisProcess]


def test_a_foreground_proxy_says_where_it_listens_and_what_it_uses_at_the_default_level(
        chassis_factory: Factory, tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "noop.lua"
    script.write_text("function read_query(packet) end\n")
    chassis = chassis_factory(["--plugins=proxy", f"--proxy-address=127.0.0.1:{port}",
                               "--proxy-backend-addresses=127.0.0.1:1",
                               "--proxy-read-only-backend-addresses=127.0.0.1:2",
                               f"--proxy-lua-script={script}"])
    text = chassis.stderr_text()
    for line in (f"proxy listening on 127.0.0.1:{port}",
                 "proxy backends: 127.0.0.1:1 (rw), 127.0.0.1:2 (ro)",
                 f"proxy Lua script: {script}"):
        assert re.search(rf"\(message\) \[worker \d+\] {re.escape(line)}$", text, re.M), text
        assert text.count(line) == 1


def test_a_proxy_without_a_script_says_so(chassis_factory: Factory) -> None:
    port = free_port()
    chassis = chassis_factory(["--plugins=proxy", f"--proxy-address=127.0.0.1:{port}",
                               "--event-threads=2"])
    text = chassis.stderr_text()
    assert text.count(f"proxy listening on 127.0.0.1:{port}") == 1  # not once per worker
    assert "proxy backends: 127.0.0.1:3306 (rw)" in text
    assert "proxy Lua script: none" in text


def test_daemon_without_a_log_file_says_where_its_log_goes(echo: EchoSetup) -> None:
    chassis = start_chassis(["--plugins=echo", f"--echo-address=127.0.0.1:{echo.port}",
                             "--daemon"])
    try:
        assert chassis.proc.wait(10) == 0
        assert "the daemon's log is discarded" in chassis.stderr_text()
        assert "--log-file" in chassis.stderr_text()
    finally:
        chassis.stop()


def test_daemon_with_a_log_file_says_nothing_on_the_terminal(echo: EchoSetup) -> None:
    chassis = start_chassis(echo.args("--daemon"))
    try:
        assert chassis.proc.wait(10) == 0
        assert chassis.stderr_text() == ""
    finally:
        chassis.stop()


def test_version_names_lupa_and_its_lua_runtime() -> None:
    out = subprocess.run([str(CHASSIS), "--version"], check=True, capture_output=True,
                         text=True).stdout
    assert re.search(r"^  lupa: \d+\.\d+.* \(Lua runtime: (LuaJIT 2\.1|Lua 5\.1)\)$", out, re.M), out
    echo = subprocess.run([str(CHASSIS), "--plugins=echo", "--version"], check=True,
                          capture_output=True, text=True).stdout
    assert "lupa" not in echo and "echo protocol: 1" in echo  # only the selected plugins
