"""Options do what their help and the docs say (issue 11, item 16)."""

from __future__ import annotations

import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.process.conftest import EchoSetup
from tests.support.chassis_proc import CHASSIS, ChassisProcess, free_port, start_chassis
from tests.support.echo_client import whoami

Factory = Callable[..., ChassisProcess]
ROOT = Path(__file__).resolve().parents[2]


def _help(*args: str) -> str:
    return subprocess.run([str(CHASSIS), *args, "--help"], check=True, capture_output=True,
                          text=True).stdout


def _must_fail(args: list[str], code: int) -> str:
    chassis = start_chassis(args, wait_ready=False)
    try:
        assert chassis.wait() == code, chassis.output()
        return chassis.stderr_text()
    finally:
        chassis.kill()


def test_no_daemon_and_no_keepalive_beat_the_defaults_file(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    cnf = echo.dir / "chassis.cnf"
    cnf.write_text(f"[mysql-proxy]\nplugins = echo\necho-address = 127.0.0.1:{echo.port}\n"
                   f"log-file = {echo.log}\ndaemon = true\nkeepalive = true\n")
    cnf.chmod(0o640)
    chassis = chassis_factory([f"--defaults-file={cnf}", "--no-daemon", "--no-keepalive"])
    assert chassis.pid == chassis.proc.pid  # not detached
    assert whoami(echo.port)["pid"] == chassis.pid  # no angel: the process itself serves


def test_max_open_files_lowers_the_limit_when_given_less(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = soft - 7
    chassis_factory(echo.args(f"--max-open-files={wanted}"))
    assert whoami(echo.port)["nofile"][0] == wanted
    assert "or lowered" in " ".join(_help("--plugins=echo").split())


def test_admin_password_file_mode_is_what_its_help_says(
        chassis_factory: Factory, tmp_path: Path) -> None:
    assert "(mode 0640 or stricter)" in " ".join(_help("--plugins=admin").split())
    pw = tmp_path / "admin.pw"
    pw.write_text("pw\n")
    args = ["--plugins=admin", f"--admin-address=127.0.0.1:{free_port()}",
            "--admin-username=admin", f"--admin-password-file={pw}"]
    pw.chmod(0o660)
    err = _must_fail(args, 3)
    assert "mode 0660" in err and "0640 or stricter required" in err and "chmod 0600" in err
    pw.chmod(0o640)
    chassis_factory(args)  # 0640 is good enough, as the help says


def test_readme_chmod_advice_agrees_with_the_defaults_file_error(echo: EchoSetup) -> None:
    cnf = echo.dir / "chassis.cnf"
    cnf.write_text("[mysql-proxy]\nplugins = echo\n")
    cnf.chmod(0o644)
    err = _must_fail([f"--defaults-file={cnf}"], 2)
    readme = " ".join((ROOT / "README.md").read_text().split())
    for words in ("0660 or stricter", "chmod o-rwx"):
        assert words in err and words in readme, words
    assert "--admin-password-file` must be 0640 or stricter" in readme
