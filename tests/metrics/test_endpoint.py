"""``--metrics-address`` with the echo plugin: restarts the angel counts, /readyz, /healthz."""

from __future__ import annotations

import os
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

from tests.metrics.test_prometheus import scrape
from tests.support.chassis_proc import free_port, start_chassis, wait_for


def _status(url: str, method: str = "GET") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _echo_args(tmp_path: Path, metrics: str, *extra: str) -> list[str]:
    return ["--plugins=echo", f"--echo-address=127.0.0.1:{free_port()}", f"--metrics-address={metrics}",
            f"--log-file={tmp_path / 'chassis.log'}", *extra]


def test_a_killed_worker_counts_as_a_restart_of_its_slot(tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    args = _echo_args(tmp_path, metrics, "--keepalive", "--event-threads=2")
    with start_chassis(args, env={"CHASSIS_RESTART_DELAY_MIN": "0.1"}) as chassis:
        restarts = ("chassis_worker_restarts_total", (("worker", "2"),))
        assert scrape(metrics)[restarts] == 0
        first = chassis.workers()
        os.kill(first[1], signal.SIGKILL)
        wait_for(lambda: len(set(chassis.workers()) - set(first)) == 1, timeout=20,
                 message="the killed worker to be replaced")
        wait_for(lambda: scrape(metrics).get(restarts) == 1, timeout=20,
                 message="worker 2's restart to be counted")
        values = scrape(metrics)
        assert values["chassis_worker_restarts_total", (("worker", "1"),)] == 0
        assert values["chassis_workers", (("state", "answered"),)] == 2
        assert values["chassis_echo_lines_total", ()] == 0  # a third-party plugin's own series


def test_readyz_healthz_and_what_else_is_served(tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    with start_chassis(_echo_args(tmp_path, metrics)):
        assert _status(f"http://{metrics}/healthz") == (200, b"ok\n")
        assert _status(f"http://{metrics}/readyz") == (200, b"ready\n")
        assert _status(f"http://{metrics}/metrics", "HEAD") == (200, b"")
        assert _status(f"http://{metrics}/nothing")[0] == 404
        assert _status(f"http://{metrics}/metrics", "POST")[0] == 405


def test_readyz_is_503_with_the_reason_while_no_backend_is_up(tmp_path: Path) -> None:
    metrics, proxy_port = f"127.0.0.1:{free_port()}", free_port()
    dead_backend = f"127.0.0.1:{free_port()}"  # nothing listens there
    args = ["--plugins=proxy", f"--proxy-address=127.0.0.1:{proxy_port}",
            f"--proxy-backend-addresses={dead_backend}", f"--metrics-address={metrics}",
            "--proxy-health-check-interval=0", f"--log-file={tmp_path / 'chassis.log'}"]
    with start_chassis(args):
        assert _status(f"http://{metrics}/readyz")[0] == 200  # UNKNOWN: not tried yet
        with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as s:
            s.settimeout(10)
            assert s.recv(1024)  # the ERR that no backend can be reached
        status, body = _status(f"http://{metrics}/readyz")
        assert status == 503
        assert b"no backend is up" in body
        values = scrape(metrics)
        assert values["chassis_proxy_client_refused_total", (("reason", "no_backend"),)] == 1
        assert values["chassis_proxy_backend_errors_total", (("backend", dead_backend),)] == 1
