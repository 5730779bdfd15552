"""The worker calls plugins through pluggy: wrappers and tracing see every call, one plugin at a time.

These run a worker in the test process (no fork, no angel) with small plugins of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

import pytest

import chassis
from chassis import logs, plugins, worker
from chassis.config import Config
from chassis.errors import StartupError
from chassis.runtime import Runtime


class Recorder:
    """A plugin that writes down every hook it gets, and stops the worker once it serves."""

    def __init__(self, name: str, calls: list[str], *, fail_in: str = "") -> None:
        self.name = name
        self.calls = calls
        self.fail_in = fail_in

    def _called(self, hook: str) -> None:
        self.calls.append(f"{self.name}.{hook}")
        if hook == self.fail_in:
            raise RuntimeError(f"{self.name} failing in {hook}")

    @chassis.hookimpl
    def chassis_apply_config(self, config: Config, runtime: Runtime) -> None:
        self._called("chassis_apply_config")

    @chassis.hookimpl
    async def chassis_serve(self, runtime: Runtime) -> None:
        self._called("chassis_serve")
        runtime.request_shutdown("the test is done")

    @chassis.hookimpl
    def chassis_stop(self, runtime: Runtime, deadline: float) -> None:
        self._called("chassis_stop")

    @chassis.hookimpl
    def chassis_shutdown(self, runtime: Runtime) -> None:
        self._called("chassis_shutdown")


class Wrapper:
    """A hookwrapper as a tracing plugin would register it: it must see every call."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    @chassis.hookimpl(hookwrapper=True)
    def chassis_serve(self, runtime: Runtime) -> Generator[None, Any, None]:
        self.calls.append("wrapper.chassis_serve")
        yield

    @chassis.hookimpl(hookwrapper=True)
    def chassis_shutdown(self, runtime: Runtime) -> Generator[None, Any, None]:
        self.calls.append("wrapper.chassis_shutdown")
        yield


def run_worker(*plugins_in_order: object) -> int:
    pm = plugins.make_manager()
    for plugin in plugins_in_order:
        pm.register(plugin, name=getattr(plugin, "name", type(plugin).__name__.lower()))
    setup = worker.WorkerSetup(config=Config({"shutdown_timeout": 5.0}), pm=pm, logs=logs.Logs())
    return worker.run(setup)


def test_hooks_are_called_in_pluggy_order_and_stopped_in_reverse() -> None:
    calls: list[str] = []
    assert run_worker(Recorder("a", calls), Recorder("b", calls)) == 0
    assert calls == [
        "b.chassis_apply_config", "a.chassis_apply_config",
        "b.chassis_serve", "a.chassis_serve",
        "a.chassis_stop", "b.chassis_stop",
        "a.chassis_shutdown", "b.chassis_shutdown",
    ]


def test_a_hookwrapper_on_the_plugin_manager_sees_each_plugins_call() -> None:
    calls: list[str] = []
    assert run_worker(Wrapper(calls), Recorder("a", calls), Recorder("b", calls)) == 0
    serve = [c for c in calls if c.endswith("chassis_serve")]
    shutdown = [c for c in calls if c.endswith("chassis_shutdown")]
    assert serve == ["wrapper.chassis_serve", "b.chassis_serve", "wrapper.chassis_serve", "a.chassis_serve"]
    assert shutdown == ["wrapper.chassis_shutdown", "a.chassis_shutdown",
                        "wrapper.chassis_shutdown", "b.chassis_shutdown"]


def test_pluggy_tracing_sees_the_calls() -> None:
    calls: list[str] = []
    traced: list[str] = []
    pm = plugins.make_manager()
    pm.register(Recorder("a", calls), name="a")
    undo = pm.add_hookcall_monitoring(
        before=lambda hook, impls, kwargs: traced.append(f"{hook}:{','.join(i.plugin_name for i in impls)}"),
        after=lambda outcome, hook, impls, kwargs: None,
    )
    try:
        setup = worker.WorkerSetup(config=Config({"shutdown_timeout": 5.0}), pm=pm, logs=logs.Logs())
        assert worker.run(setup) == 0
    finally:
        undo()
    assert traced == ["chassis_apply_config:a", "chassis_serve:a", "chassis_stop:a", "chassis_shutdown:a"]


def test_a_failing_plugin_is_named_and_the_others_still_shut_down(
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    caplog.set_level(logging.INFO, logger="chassis")
    code = run_worker(Recorder("a", calls, fail_in="chassis_shutdown"),
                      Recorder("b", calls, fail_in="chassis_apply_config"))
    assert code == StartupError.exit_code
    assert "plugin 'b' failed in chassis_apply_config: RuntimeError: b failing in chassis_apply_config" \
        in caplog.text
    assert "plugin 'a' raised in chassis_shutdown" in caplog.text
    assert calls == ["b.chassis_apply_config", "a.chassis_stop", "b.chassis_stop",
                     "a.chassis_shutdown", "b.chassis_shutdown"]


class Offering:
    name = "offering"

    @chassis.hookimpl
    def chassis_offer(self, name: str, runtime: Runtime) -> Any:
        return {"worker": runtime.worker_id} if name == "offering.thing" else None


class Asking(Recorder):
    found: list[Any]

    @chassis.hookimpl
    async def chassis_serve(self, runtime: Runtime) -> None:
        self.found = [runtime.offered("offering.thing"), runtime.offered("nobody.nothing")]
        runtime.request_shutdown("the test is done")


def test_a_plugin_gets_what_another_offers_through_the_runtime() -> None:
    asking = Asking("asking", [])
    assert run_worker(Offering(), asking) == 0
    assert asking.found == [{"worker": 0}, None]
