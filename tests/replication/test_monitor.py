"""The replication monitor as an operator meets it: its options' checks, a monitor that
cannot log in (logged once, nothing else changes), and workers that restart."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

from tests.metrics.test_prometheus import scrape
from tests.replication.conftest import ReplProxy, secret_file, served_by, whoami
from tests.support.chassis_proc import free_port, start_chassis, wait_for
from tests.support.control import ask_all
from tests.support.replication import MONITOR_PASSWORD, Topology


def must_fail(args: list[str]) -> str:
    """stderr of a chassis that stops at start-up with exit code 3 (a configuration error)."""
    chassis = start_chassis(["--plugins=proxy", f"--proxy-address=127.0.0.1:{free_port()}", *args],
                            wait_ready=False)
    try:
        assert chassis.wait() == 3, chassis.output()
        return chassis.stderr_text()
    finally:
        chassis.kill()


def test_monitor_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    pw = secret_file(tmp_path / "mon.pw", "secret-monitor-pw")
    pw.chmod(0o644)
    err = must_fail(["--proxy-monitor-user=monitor", f"--proxy-monitor-password-file={pw}"])
    assert "--proxy-monitor-password-file" in err and "chmod 0600" in err
    assert "secret-monitor-pw" not in err


def test_options_that_need_the_monitor_say_so(tmp_path: Path) -> None:
    for option in ("--proxy-backend-roles=auto", "--proxy-max-replication-lag=5"):
        err = must_fail([option])
        assert option.split("=")[0] in err and "--proxy-monitor-user" in err


def test_monitor_that_cannot_log_in_changes_nothing_and_says_so_once(
        topo: Topology, repl_proxy: Callable[..., ReplProxy], tmp_path: Path) -> None:
    whoami(topo)
    metrics = f"127.0.0.1:{free_port()}"
    wrong = secret_file(tmp_path / "wrong.pw", "not-the-monitor-pw")
    proxy = repl_proxy(["--proxy-backend-roles=auto", "--proxy-max-replication-lag=5",
                        f"--metrics-address={metrics}", f"--proxy-monitor-password-file={wrong}"])
    first = topo.servers[0].address
    failures = ("chassis_proxy_monitor_probes_total", (("backend", first), ("result", "error")))
    wait_for(lambda: scrape(metrics).get(failures, 0) >= 3, 15, "three failed probe rounds")
    log = proxy.log_text()
    lines = [line for line in log.splitlines() if "cannot probe it" in line]
    assert len(lines) == 3, lines  # one per backend, not one per round
    assert "1045" in lines[0]
    assert "not-the-monitor-pw" not in log and MONITOR_PASSWORD not in log
    # today's behaviour: configured roles, nobody stale, clients served
    assert proxy.roles() == ["rw", "ro", "ro"]
    assert proxy.replication() == [("unknown", None, "no")] * 3
    with proxy.connect("native", database="test") as conn:
        assert served_by(conn) == "repl0"


def worker_types(metrics: str, topo: Topology, worker: str) -> list[str] | None:
    """Each backend's type as one worker sees it (chassis_proxy_backend_up's labels)."""
    found = {dict(labels)["backend"]: dict(labels)["type"]
             for (name, labels), _ in scrape(metrics).items()
             if name == "chassis_proxy_backend_up" and dict(labels).get("worker") == worker}
    if len(found) != len(topo.servers):
        return None
    return [found[s.address] for s in topo.servers]


def test_the_monitor_comes_back_with_a_restarted_worker_1(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    """Worker 1 probes; killed, it is restarted (--keepalive) and so is the monitor: a
    switchover after that still reaches both workers, announced once."""
    metrics = f"127.0.0.1:{free_port()}"
    proxy = repl_proxy(["--proxy-backend-roles=auto", f"--metrics-address={metrics}",
                        "--keepalive"], event_threads=2, env={"CHASSIS_RESTART_DELAY_MIN": "0.1"})
    wait_for(lambda: proxy.replication()[1][0] == "running", 10, "the monitor's first report")
    before = proxy.process.workers()
    (first,) = {int(pid) for pid in re.findall(r"\[worker#1 (\d+)\]", proxy.log_text())}
    assert first in before
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: len(set(proxy.process.workers()) - set(before)) == 1, 20,
             "worker 1 to be replaced")
    topo.switchover(topo.servers[1])
    live = ["ro", "rw", "ro"]
    wait_for(lambda: worker_types(metrics, topo, "1") == live
             and worker_types(metrics, topo, "2") == live, 10, "both workers to see the switch")
    log = proxy.wait_log("role ro -> rw")
    assert log.count("role ro -> rw") == 1, log


def test_a_restarted_worker_takes_the_monitors_last_reports(
        topo: Topology, repl_proxy: Callable[..., ReplProxy]) -> None:
    """Worker 2, killed and restarted, shows the live roles at once, not one (long)
    monitor interval later: it asks worker 1 for its last reports when it starts."""
    topo.switchover(topo.servers[1])
    metrics = f"127.0.0.1:{free_port()}"
    proxy = repl_proxy(["--proxy-backend-roles=auto", "--proxy-monitor-interval=60",
                        f"--metrics-address={metrics}", "--keepalive"], event_threads=2,
                       env={"CHASSIS_RESTART_DELAY_MIN": "0.1"})

    def types_of_worker(worker: str) -> list[str] | None:
        return worker_types(metrics, topo, worker)

    live = ["ro", "rw", "ro"]
    wait_for(lambda: types_of_worker("1") == live and types_of_worker("2") == live, 10,
             "both workers to see the switched roles")
    before = proxy.process.workers()
    os.kill(before[1], signal.SIGKILL)
    wait_for(lambda: len(set(proxy.process.workers()) - set(before)) == 1, 20,
             "worker 2 to be replaced")
    # a restarted worker starts from the command line's roles (rw, ro, ro) ...
    wait_for(lambda: types_of_worker("2") == live, 5, "the new worker 2 to see the live roles")


def test_a_reload_probes_the_new_backend_list_and_keeps_live_roles(
        topo: Topology, tmp_path: Path) -> None:
    """SIGHUP with a backend added in the defaults-file: worker 1's monitor starts again
    on the new list (the new replica gets its replication state), and the backends that
    stay keep their live roles (the reload set them back to the file's for a moment)."""
    topo.switchover(topo.servers[1])  # live roles now differ from the file's: -b repl0
    s0, s1, s2 = topo.servers
    cnf = tmp_path / "chassis.cnf"
    pw = secret_file(tmp_path / "mon.pw", MONITOR_PASSWORD)

    def write(ro: list[str]) -> None:
        cnf.write_text("[mysql-proxy]\n"
                       f"proxy-backend-addresses={s0.address}\n"
                       f"proxy-read-only-backend-addresses={','.join(ro)}\n"
                       f"proxy-monitor-user=monitor\nproxy-monitor-password-file={pw}\n"
                       "proxy-monitor-interval=60\nproxy-backend-roles=auto\n")
        cnf.chmod(0o600)

    write([s1.address])
    port = free_port()
    chassis = start_chassis(["--plugins=proxy", f"--proxy-address=127.0.0.1:{port}",
                             f"--defaults-file={cnf}", f"--log-file={tmp_path / 'chassis.log'}"])
    try:
        def backends() -> list[tuple[str, str, str]]:
            (answer,) = ask_all(chassis.pid, 1, {"plugin": "proxy", "op": "backends"})
            return [(b["address"], b["type"], b["replication"]) for b in answer["backends"]]

        wait_for(lambda: backends() == [(s0.address, "ro", "running"), (s1.address, "rw", "none")],
                 10, "the live roles")
        write([s1.address, s2.address])
        chassis.signal(signal.SIGHUP)
        chassis.wait_for_log("reload: applied in worker", timeout=20)
        wait_for(lambda: backends()[2:] == [(s2.address, "ro", "running")], 5,
                 "the added backend probed (the interval is 60 s: by the restarted monitor)")
        assert backends()[:2] == [(s0.address, "ro", "running"), (s1.address, "rw", "none")]
    finally:
        chassis.stop(timeout=10)


def test_a_monitor_account_without_privileges_is_told_what_to_grant(
        topo: Topology, repl_proxy: Callable[..., ReplProxy], tmp_path: Path) -> None:
    for server in topo.servers:
        conn = server.connect("root")
        try:
            with conn.cursor() as cur:
                cur.execute("SET SESSION sql_log_bin=0")
                cur.execute("CREATE USER IF NOT EXISTS 'weak'@'%' IDENTIFIED BY 'weak_pw'")
        finally:
            conn.close()
    pw = secret_file(tmp_path / "weak.pw", "weak_pw")
    proxy = repl_proxy(["--proxy-monitor-user=weak", f"--proxy-monitor-password-file={pw}"])
    line = proxy.wait_log("GRANT SLAVE MONITOR")
    assert "error 1227" in line and "TO 'weak'" in line
    assert proxy.replication()[1][0] == "unknown"
