"""One worker process: an asyncio event loop (uvloop when installed) running the hooks.

Order inside the running loop: every plugin's ``chassis_apply_config`` (binds ports,
may run as root), the privilege drop (``--user``), the parent-death signal and a check
that the angel is still there, signal handlers, every plugin's ``chassis_serve``, and
then "ready" to whoever waits (angel, ``--daemon`` launcher, systemd). SIGTERM/SIGINT
or :meth:`Runtime.request_shutdown` run ``chassis_stop`` with a deadline, then
``chassis_shutdown``, and the worker exits 0. SIGHUP reopens the log; a configuration
reloaded (by this process without an angel, else sent by the angel) goes through every
plugin's ``chassis_reload`` (:mod:`chassis.reload`). A start-up failure exits with
:attr:`StartupError.exit_code`, which the angel never restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from chassis import (
    listen,
    listenfds,
    logs,
    metrics_http,
    privileges,
    reload,
    signals,
    takeover,
    upgrade,
    watchdog,
)
from chassis.config import Config
from chassis.control import ControlChannel
from chassis.errors import ChassisError, StartupError
from chassis.pidfile import PidFile
from chassis.plugins import PluginCall, plugin_calls
from chassis.readiness import Reporter
from chassis.runtime import Runtime
from chassis.sdnotify import Notifier

log = logging.getLogger("chassis.worker")

#: How often a worker checks that its angel is still its parent (PDEATHSIG is the
#: fast path; this catches the rest, such as an angel that died before prctl).
PARENT_CHECK_INTERVAL = 1.0


class StartupFailure(Exception):
    """Start-up stopped; the message is for the user (already attributed to a plugin)."""


@dataclass
class WorkerSetup:
    config: Config
    pm: pluggy.PluginManager
    logs: logs.Logs
    worker_id: int = 0
    worker_count: int = 1
    reporter: Reporter = field(default_factory=lambda: Reporter(None))
    angel_pid: int | None = None
    user: privileges.TargetUser | None = None
    #: Main-process duties when there is no angel: pid file, systemd, launcher.
    on_ready: Callable[[], None] | None = None
    on_stopping: Callable[[], None] | None = None
    #: Shared with the angel, which restarts a worker that stops beating (--keepalive).
    heartbeat: watchdog.Heartbeat | None = None
    heartbeat_interval: float = 1.0
    #: No angel: how SIGHUP reads the configuration again (``cli.reparse``).
    reread: reload.Reread | None = None
    #: With an angel: where it sends the configurations it accepted (SIGHUP), asks for
    #: the listeners and says "hand over" (SIGUSR2).
    commands: socket.socket | None = None
    #: No angel: what an upgrade (SIGUSR2) renames and tells.
    pidfile: PidFile | None = None
    notifier: Notifier | None = None
    #: Started by an upgrade: where the old chassis hands over its connections.
    handoff: socket.socket | None = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(setup: WorkerSetup) -> int:
    """Run the worker to the end; returns its exit code."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    worker = Worker(setup)
    try:
        return loop.run_until_complete(worker.main())
    finally:
        try:
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


class Worker:
    def __init__(self, setup: WorkerSetup) -> None:
        self.setup = setup
        self.config = setup.config
        self.stop_reason: str | None = None
        self.stop_requested = asyncio.Event()
        self.hurry = asyncio.Event()
        self.reloading = asyncio.Lock()
        self.inherited_taken: list[int] = []  # which inherited listeners this worker took
        self.runtime = Runtime(
            config=setup.config,
            worker_id=setup.worker_id,
            worker_count=setup.worker_count,
            _on_shutdown=self.request_stop,
            _offers=self._offered,
        )
        self.takeover = takeover.Takeover(setup.pm, self.runtime, setup.pidfile,
                                          setup.notifier, self.request_stop)

    def request_stop(self, reason: str) -> None:
        """SIGTERM, SIGINT, a plugin or a dead angel: begin the graceful stop once."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.runtime.stopping = True
            self.stop_requested.set()
        else:  # asked twice: do not wait for running work any longer
            self.hurry.set()

    def _offered(self, name: str) -> Any:
        return self.setup.pm.hook.chassis_offer(name=name, runtime=self.runtime)

    async def main(self) -> int:
        self.runtime.loop = asyncio.get_running_loop()
        if self.setup.heartbeat is not None:
            self.runtime.loop.create_task(
                watchdog.beat_forever(self.setup.heartbeat, self.setup.heartbeat_interval),
                name="chassis-heartbeat")
        try:
            ready = await self._start_unless_stopped()
            if ready and self.setup.on_ready is not None:
                self.setup.on_ready()
        except (StartupFailure, ChassisError) as e:
            message = str(e)
            log.log(logs.CRITICAL, "start-up failed: %s", message)
            self.setup.reporter.failed(message, StartupError.exit_code)
            await self._stop_hooks(deadline=self.runtime.loop.time())
            await self._close_control()
            self._shutdown_hooks()
            self._log_exit(StartupError.exit_code)
            return StartupError.exit_code
        if ready:
            self.setup.reporter.ready(self.inherited_taken)
            log.log(logs.MESSAGE, "worker %d of %d ready", self.setup.worker_id + 1,
                    self.setup.worker_count)
            if self.setup.handoff is not None:
                self.takeover.receive(self.setup.handoff)
        await self.stop_requested.wait()
        log.log(logs.MESSAGE, "shutting down: %s", self.stop_reason)
        self.takeover.abandon()
        if self.setup.on_stopping is not None and self.runtime.succeeded_by is None:
            self.setup.on_stopping()  # (after an upgrade systemd follows the new chassis)
        deadline = self.runtime.loop.time() + float(self.config.get("shutdown_timeout", 30.0))
        await self._stop_hooks(deadline)
        await self._close_control()
        self._shutdown_hooks()
        self.takeover.close()  # the new workers see the end of the hand-over
        self._log_exit(0)
        return 0

    async def _start_unless_stopped(self) -> bool:
        """Run start-up; a stop requested meanwhile (a serve that hangs) cancels it.

        Returns whether start-up completed (False: stopped before it was ready).
        """
        start = asyncio.ensure_future(self._start())
        stopped = asyncio.ensure_future(self.stop_requested.wait())
        try:
            await asyncio.wait([start, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if start.done():
            start.result()  # raises a start-up failure
            return True
        start.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await start
        log.log(logs.MESSAGE, "start-up interrupted: %s", self.stop_reason)
        return False

    async def _close_control(self) -> None:
        if self.runtime.control is not None:
            await self.runtime.control.close()

    def _log_exit(self, code: int) -> None:
        level = logs.CRITICAL if self.config.get("verbose_shutdown") else logs.MESSAGE
        log.log(level, "shutting down normally, exit code is: %d", code)

    async def _start(self) -> None:
        setup = self.setup
        # Listeners may be shared with our sibling workers only (chassis.listen).
        listen.set_instance(setup.angel_pid or os.getpid(), setup.worker_id)
        metrics_http.install(setup.pm, self.config, setup.angel_pid)  # --metrics-address
        for call in plugin_calls(setup.pm, "chassis_apply_config"):
            await self._start_hook(call, "chassis_apply_config",
                                   config=self.config, runtime=self.runtime)
        self.inherited_taken = listenfds.close_untaken()
        if setup.user is not None:
            privileges.drop(setup.user)
            log.log(logs.MESSAGE, "now running as user: %s (%d/%d)", setup.user.name,
                    setup.user.uid, setup.user.gid)
        if setup.angel_pid is not None:
            self._watch_angel(setup.angel_pid)
        self._install_signal_handlers()
        control = ControlChannel(setup.angel_pid or os.getpid(), setup.worker_id,
                                 setup.worker_count, self._answer_control)
        await control.start()
        self.runtime.control = control
        for call in plugin_calls(setup.pm, "chassis_serve"):
            await self._start_hook(call, "chassis_serve", runtime=self.runtime)

    async def _start_hook(self, call: PluginCall, hook: str, **kwargs: Any) -> None:
        try:
            result = call(**kwargs)
            if inspect.isawaitable(result):
                await result
        except StartupError as e:
            raise StartupFailure(f"plugin {call.plugin_name!r}: {e}") from e
        except Exception as e:
            log.log(logs.CRITICAL, "plugin %r raised in %s", call.plugin_name, hook,
                    exc_info=True)
            raise StartupFailure(
                f"plugin {call.plugin_name!r} failed in {hook}: {type(e).__name__}: {e}"
            ) from e

    def _answer_control(self, request: dict[str, Any]) -> list[Any]:
        results: list[Any] = self.setup.pm.hook.chassis_control(runtime=self.runtime,
                                                                request=request)
        return results

    def _watch_angel(self, angel_pid: int) -> None:
        # After the privilege drop: a credential change clears PR_SET_PDEATHSIG.
        try:
            privileges.set_parent_death_signal(signal.SIGTERM)
        except OSError as e:
            log.warning("cannot set PR_SET_PDEATHSIG (%s); relying on the parent check",
                        e.strerror)
        if os.getppid() != angel_pid:
            self.request_stop(f"the angel (pid {angel_pid}) died during start-up")
        asyncio.get_running_loop().create_task(self._check_parent(angel_pid),
                                               name="chassis-parent-check")

    async def _check_parent(self, angel_pid: int) -> None:
        while not self.stop_requested.is_set():
            await asyncio.sleep(PARENT_CHECK_INTERVAL)
            if os.getppid() != angel_pid:
                self.request_stop(f"the angel (pid {angel_pid}) is gone")

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        if self.setup.commands is not None:
            loop.add_reader(self.setup.commands.fileno(), self._on_command)
        for signum in (signal.SIGUSR1, signal.SIGUSR2):
            loop.add_signal_handler(signum, self._on_user_signal, signum)
        signals.unblock()  # what arrived during start-up is delivered now

    def _on_stop_signal(self, signum: int) -> None:
        if self.stop_reason is not None:
            log.log(logs.MESSAGE, "received %s again: not waiting for running work",
                    signals.name(signum))
        self.request_stop(f"received {signals.name(signum)}")

    def _on_sighup(self) -> None:
        """Reopen the log file and each plugin's own logs (``chassis_reopen_logs``); without
        an angel, reload too (the angel reloads for its workers and sends them what it
        accepted)."""
        self.setup.logs.reopen_after_sighup()
        for call in plugin_calls(self.setup.pm, "chassis_reopen_logs"):
            try:
                call(runtime=self.runtime)
            except Exception:
                log.log(logs.CRITICAL, "plugin %r raised in chassis_reopen_logs",
                        call.plugin_name, exc_info=True)
        if self.setup.reread is not None and self.setup.angel_pid is None:
            asyncio.get_running_loop().create_task(self._reload_from_files(),
                                                   name="chassis-reload")

    async def _reload_from_files(self) -> None:
        async with self.reloading:
            if self.stop_reason is not None or self.setup.reread is None:
                return
            plan = reload.prepare(self.setup.pm, self.config, self.setup.reread)
            if plan is not None:
                await self._apply(plan.config)

    def _on_command(self) -> None:
        commands = self.setup.commands
        assert commands is not None
        try:
            data, fds, _, _ = socket.recv_fds(commands, reload.MAX_MESSAGE, 4)
        except BlockingIOError:
            return
        except OSError as e:
            log.log(logs.CRITICAL, "cannot read what the angel sent: %s", e)
            return
        if not data:  # the angel is gone: the parent check stops us
            asyncio.get_running_loop().remove_reader(commands.fileno())
            return
        if data == upgrade.ASK_LISTENERS:
            upgrade.answer_listeners(commands)
            return
        if data.startswith(upgrade.HAND_OVER) and fds:
            self.takeover.hand_over(socket.socket(fileno=fds[0]),
                                    int(data[len(upgrade.HAND_OVER):]))
            return
        try:
            config = reload.decode(data)
        except (ValueError, TypeError, EOFError) as e:  # pickle errors included
            log.log(logs.CRITICAL, "reload: cannot read the configuration the angel sent: %s", e)
            return
        asyncio.get_running_loop().create_task(self._apply_locked(config), name="chassis-reload")

    async def _apply_locked(self, config: Config) -> None:
        async with self.reloading:
            if self.stop_reason is None:
                await self._apply(config)

    async def _apply(self, config: Config) -> None:
        await reload.apply(self.setup.pm, self.config, config, self.runtime, self.setup.logs)
        self.config = self.setup.config = config
        log.log(logs.MESSAGE, "reload: applied in worker %d of %d", self.setup.worker_id + 1,
                self.setup.worker_count)

    def _on_user_signal(self, signum: int) -> None:
        if signum == signal.SIGUSR2 and self.setup.angel_pid is None:
            self.takeover.begin(self.config, self.stop_reason is not None)
            return
        log.log(logs.INFO, "received %s: nothing to do", signals.name(signum))

    async def _stop_hooks(self, deadline: float) -> None:
        """``chassis_stop`` of every plugin, awaited together until ``deadline``."""
        loop = asyncio.get_running_loop()
        tasks: dict[asyncio.Future[Any], str] = {}
        for call in reversed(plugin_calls(self.setup.pm, "chassis_stop")):
            try:
                result = call(runtime=self.runtime, deadline=deadline)
            except Exception:
                log.log(logs.CRITICAL, "plugin %r raised in chassis_stop", call.plugin_name,
                        exc_info=True)
                continue
            if inspect.isawaitable(result):
                tasks[asyncio.ensure_future(result)] = call.plugin_name
        if not tasks:
            return
        hurry = asyncio.ensure_future(self.hurry.wait())
        timeout = max(0.0, deadline - loop.time())
        await asyncio.wait([*tasks, hurry], timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        while not hurry.done() and not all(t.done() for t in tasks):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait([*(t for t in tasks if not t.done()), hurry],
                               timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        hurry.cancel()
        for task, name in tasks.items():
            if not task.done():
                log.warning("plugin %r did not finish stopping within "
                            "--shutdown-timeout; cancelling it", name)
                task.cancel()
        pending = [t for t in tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        for task, name in tasks.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.log(logs.CRITICAL, "plugin %r failed in chassis_stop: %s", name,
                        task.exception(), exc_info=task.exception())

    def _shutdown_hooks(self) -> None:
        for call in reversed(plugin_calls(self.setup.pm, "chassis_shutdown")):
            try:
                result = call(runtime=self.runtime)
                if inspect.iscoroutine(result):
                    result.close()
                    log.warning("plugin %r: chassis_shutdown must not be async",
                                call.plugin_name)
            except Exception:
                log.log(logs.CRITICAL, "plugin %r raised in chassis_shutdown",
                        call.plugin_name, exc_info=True)
        with contextlib.suppress(Exception):
            self.setup.logs.flush()
