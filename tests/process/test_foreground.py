"""A single worker in the foreground: ready, serving, graceful stop."""

from __future__ import annotations

import signal
from collections.abc import Callable

from tests.support.chassis_proc import ChassisProcess, free_port
from tests.support.echo_client import ask


def test_sigterm_stops_a_foreground_worker_with_exit_code_0(
        chassis_factory: Callable[..., ChassisProcess]) -> None:
    port = free_port()
    chassis = chassis_factory(["--plugins=echo", f"--echo-address=127.0.0.1:{port}",
                               "--verbose-shutdown"])
    assert ask(port, "hello") == "hello"
    chassis.signal(signal.SIGTERM)
    assert chassis.wait() == 0
    assert "STOPPING=1" in chassis.messages or chassis._receive(1.0)
    assert "(critical) [worker" in chassis.stderr_text()
    assert "shutting down normally, exit code is: 0" in chassis.stderr_text()
