"""The angel (``--keepalive``, ``--event-threads``): every row of the table in
chassis-process.md, with the angel and the worker as target where the row says so."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.process.conftest import FAST_RESTART, EchoSetup
from tests.support.chassis_proc import (
    ChassisProcess,
    children_of,
    is_alive,
    process_state,
    start_chassis,
    wait_for,
)
from tests.support.echo_client import ask, whoami

Factory = Callable[..., ChassisProcess]
TARGETS = ["angel", "worker"]


def target_pid(chassis: ChassisProcess, target: str) -> int:
    if target == "angel":
        return chassis.pid
    [worker] = chassis.workers()
    assert worker != chassis.pid
    return worker


def only_worker(chassis: ChassisProcess) -> int:
    [worker] = children_of(chassis.pid)
    return worker


def new_worker(chassis: ChassisProcess, old: int, timeout: float = 10.0) -> int:
    """Wait until the angel runs a worker other than ``old``, and it serves."""
    def replaced() -> int:
        kids = [p for p in children_of(chassis.pid) if p != old]
        return kids[0] if kids else 0
    pid = wait_for(replaced, timeout, f"a worker other than {old}")
    chassis.wait_for_log(f"worker 1 (pid={pid}) ready", timeout)
    return pid


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_sigterm_or_sigint_stops_worker_and_angel_with_exit_code_0(
        chassis_factory: Factory, echo: EchoSetup, target: str, signum: int) -> None:
    chassis = chassis_factory(echo.args("--keepalive"))
    worker = only_worker(chassis)
    assert whoami(echo.port)["pid"] == worker
    os.kill(target_pid(chassis, target), signum)
    assert chassis.wait() == 0
    assert not is_alive(worker)
    log = echo.log.read_text()
    assert f"[worker {worker}] shutting down normally, exit code is: 0" in log
    assert f"worker 1 (pid={worker}) exited normally with exit-code = 0" in log
    assert f"[angel {chassis.pid}] shutting down normally, exit code is: 0" in log
    assert "died" not in log


@pytest.mark.parametrize("target", TARGETS)
def test_sighup_to_either_reopens_the_log_file_and_nothing_exits(
        chassis_factory: Factory, echo: EchoSetup, target: str) -> None:
    chassis = chassis_factory(echo.args("--keepalive"))
    worker = only_worker(chassis)
    for round_ in (1, 2):  # the angel forwards every SIGHUP, not only the first
        rotated = echo.log.with_name(f"chassis.log.{round_}")
        echo.log.rename(rotated)
        os.kill(target_pid(chassis, target), signal.SIGHUP)
        wait_for(lambda: echo.log.exists() and f"[worker {worker}] re-opened log file after "
                 "SIGHUP" in echo.log.read_text(), 5, f"reopen #{round_}")
        assert f"[worker {worker}] received a SIGHUP, closing log file" in rotated.read_text()
    if target == "angel":
        assert f"[angel {chassis.pid}] re-opened log file after SIGHUP" in echo.log.read_text()
    # SIGHUP reloads too: the angel's short-lived check child may still be going
    wait_for(lambda: children_of(chassis.pid) == [worker], 30, "the worker as the only child")
    assert ask(echo.port, "alive") == "alive"


def test_sigusr1_to_the_angel_reaches_the_worker_and_stops_nothing(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    """(SIGUSR2 upgrades: tests/process/test_upgrade.py.)"""
    chassis = chassis_factory(echo.args("--keepalive", "--log-level=info"))
    worker = only_worker(chassis)
    signum = signal.SIGUSR1
    name = signal.Signals(signum).name
    for count in (1, 2):
        chassis.signal(signum)
        chassis.wait_for_log(f"[worker {worker}] received {name}: nothing to do", count=count)
    assert children_of(chassis.pid) == [worker]
    assert ask(echo.port, "fine") == "fine"


def test_sigkill_of_the_worker_is_logged_and_a_new_worker_listens(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--keepalive"))
    worker = only_worker(chassis)
    os.kill(worker, signal.SIGKILL)
    replacement = new_worker(chassis, worker, timeout=5)  # default delay: 1 s
    me = whoami(echo.port)
    assert me["pid"] == replacement and me["ppid"] == chassis.pid
    log = echo.log.read_text()
    assert re.search(rf"\(critical\) \[angel {chassis.pid}\] worker 1 \(pid={worker}\) died on "
                     r"signal=9 \(SIGKILL\) after [\d.]+ s \(it used \d+ kBytes max\)", log)
    assert "restarting worker 1 in 1.0 s" in log


@pytest.mark.parametrize("target", TARGETS)
def test_sigstop_and_sigcont_of_either_change_nothing_else(
        chassis_factory: Factory, echo: EchoSetup, target: str) -> None:
    chassis = chassis_factory(echo.args("--keepalive"))
    worker = only_worker(chassis)
    pid = target_pid(chassis, target)
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_for(lambda: process_state(pid) == "T", 5, "the stopped state")
        if target == "angel":
            assert ask(echo.port, "angel asleep") == "angel asleep"
        else:
            # the angel noticed (SIGCHLD) and must neither restart nor give up
            os.kill(chassis.pid, signal.SIGHUP)  # prove the angel loop still turns
            chassis.wait_for_log(f"[angel {chassis.pid}] re-opened log file after SIGHUP")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: process_state(pid) in ("S", "R"), 5, "the resumed state")
    assert whoami(echo.port)["pid"] == worker
    # SIGHUP reloads too: the angel's short-lived check child may still be going
    wait_for(lambda: children_of(chassis.pid) == [worker], 30, "the worker as the only child")
    log = echo.log.read_text()
    assert "died" not in log and "exited" not in log and log.count("started worker") == 1


def test_the_worker_stops_when_its_angel_is_killed(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--keepalive"))
    worker = only_worker(chassis)
    assert whoami(echo.port)["pdeathsig"] == signal.SIGTERM
    os.kill(chassis.pid, signal.SIGKILL)
    wait_for(lambda: not is_alive(worker), 10, "the orphaned worker to exit")
    log = echo.log.read_text()
    assert f"[worker {worker}] shutting down: received SIGTERM" in log
    assert f"[worker {worker}] shutting down normally, exit code is: 0" in log


def test_a_startup_failure_is_not_restarted(echo: EchoSetup) -> None:
    chassis = start_chassis(echo.args("--keepalive", "--echo-fail-startup"),
                            env=FAST_RESTART, wait_ready=False)
    try:
        assert chassis.wait() == 3
        assert "echo: failing on purpose (--echo-fail-startup)" in chassis.stderr_text()
        log = echo.log.read_text()
        assert log.count("started worker") == 1
        assert "exited normally with exit-code = 3" in log
        assert "restarting" not in log
    finally:
        chassis.kill()


def test_a_crash_looping_worker_backs_off_and_the_angel_gives_up(echo: EchoSetup) -> None:
    counter = echo.dir / "starts"
    chassis = start_chassis(
        echo.args("--keepalive", "--echo-crash-at-start=1000", f"--echo-counter-file={counter}"),
        env={"CHASSIS_RESTART_DELAY_MIN": "0.1"}, wait_ready=False)
    try:
        assert chassis.wait(timeout=30) == 1
    finally:
        chassis.kill()
    log = echo.log.read_text()
    delays = [float(d) for d in re.findall(r"restarting worker 1 in ([\d.]+) s", log)]
    assert delays == [0.1, 0.2, 0.4, 0.8]
    assert "giving up: 5 worker failures within 60 s; the last: worker 1" in log
    assert "died on signal=9" in chassis.stderr_text()  # the launcher sees why
    starts = [float(t) for t in counter.read_text().split()]
    assert len(starts) == 5
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, delay in zip(gaps, delays):  # the delays grow: each start waited its own
        assert gap >= delay, (gaps, delays)


def test_a_worker_crashing_at_start_is_restarted_until_it_serves(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    counter = echo.dir / "starts"
    chassis = chassis_factory(
        echo.args("--keepalive", "--echo-crash-at-start=2", f"--echo-counter-file={counter}"),
        env=FAST_RESTART)
    assert ask(echo.port, "finally") == "finally"
    assert len(counter.read_text().split()) == 3
    assert echo.log.read_text().count("died on signal=9") == 2
    assert "READY=1" in chassis.messages


def test_a_crash_with_an_exit_code_after_ready_is_restarted(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--keepalive"), env=FAST_RESTART)
    worker = only_worker(chassis)
    assert ask(echo.port, "die 7") == ""
    new_worker(chassis, worker)
    assert f"worker 1 (pid={worker}) exited normally with exit-code = 7" in echo.log.read_text()


def test_the_restart_delay_starts_over_after_a_worker_ran_well(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--keepalive"),
                              env={**FAST_RESTART, "CHASSIS_RESTART_RESET_AFTER": "0"})
    worker = only_worker(chassis)
    for _ in range(3):
        os.kill(worker, signal.SIGKILL)
        worker = new_worker(chassis, worker)
    assert re.findall(r"restarting worker 1 in ([\d.]+) s", echo.log.read_text()) == ["0.1"] * 3


def test_a_worker_exiting_0_on_its_own_ends_the_angel_with_0(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--keepalive", "--event-threads=2"))
    workers = children_of(chassis.pid)
    assert ask(echo.port, "exit") == "bye"
    assert chassis.wait() == 0
    assert not any(is_alive(w) for w in workers)
    assert "stopping the other workers" in echo.log.read_text()


def test_two_workers_both_serve(chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--event-threads=2"))
    workers = children_of(chassis.pid)
    assert len(workers) == 2
    seen: set[int] = set()
    deadline = time.monotonic() + 10
    while seen != set(workers) and time.monotonic() < deadline:
        seen.add(whoami(echo.port)["pid"])  # SO_REUSEPORT spreads new connections
    assert seen == set(workers)
    log = echo.log.read_text()
    assert f"[worker#1 {workers[0]}]" in log and f"[worker#2 {workers[1]}]" in log


def test_the_control_channel_reaches_every_worker(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--event-threads=2"))
    peers = json.loads(ask(echo.port, "peers"))
    assert sorted(r["results"][0]["pid"] for r in peers) == children_of(chassis.pid)


def test_only_the_killed_one_of_two_workers_is_restarted(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--keepalive", "--event-threads=2"), env=FAST_RESTART)
    second = int(re.findall(r"started worker 2 \(pid=(\d+)\)", echo.log.read_text())[0])
    [first] = [p for p in children_of(chassis.pid) if p != second]
    os.kill(second, signal.SIGKILL)
    replacement = wait_for(lambda: [p for p in children_of(chassis.pid)
                                    if p not in (first, second)], 10, "a new second worker")[0]
    chassis.wait_for_log(f"worker 2 (pid={replacement}) ready")
    assert sorted(children_of(chassis.pid)) == sorted([first, replacement])
    assert f"worker 2 (pid={second}) died on signal=9" in echo.log.read_text()


def test_without_keepalive_a_crash_stops_every_worker(echo: EchoSetup) -> None:
    chassis = start_chassis(echo.args("--event-threads=2"))
    try:
        workers = children_of(chassis.pid)
        assert ask(echo.port, "die 7") == ""
        assert chassis.wait() == 7
        assert not any(is_alive(w) for w in workers)
        assert "not restarted (no --keepalive)" in echo.log.read_text()
    finally:
        chassis.kill()


def test_stdio_of_a_foreground_angel_is_left_alone(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis_factory(echo.args("--keepalive"))
    me = whoami(echo.port)
    assert me["stdio"][0] == "/dev/null"  # what the test gave it, not redirected
    assert me["stdio"][2].startswith("/tmp/chassis-test-")
    assert Path(me["cwd"]) == Path.cwd()
