"""A worker's part in an upgrade (SIGUSR2): the mechanics are :mod:`chassis.upgrade`'s.

* Without an angel the worker is the main process: on SIGUSR2 it starts the new
  chassis itself and waits for its report inside the event loop (:meth:`Takeover.begin`).
* In an old worker, once the new chassis is ready: every plugin's
  ``chassis_handover_out``, the log line "upgrade: new chassis pid N ready, handing over
  K connections, draining M", then the graceful stop (:meth:`Takeover.hand_over`).
* In a new worker (started by an upgrade), once it serves: every item the old workers
  send goes to ``chassis_handover_in`` (:meth:`Takeover.receive`).
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
from typing import Any

import pluggy

from chassis import listenfds, logs, upgrade
from chassis.config import Config
from chassis.pidfile import PidFile
from chassis.plugins import plugin_calls
from chassis.runtime import Runtime
from chassis.sdnotify import Notifier

log = logging.getLogger("chassis.worker")


class Takeover:
    """One worker's upgrade state: the new chassis it waits for, the hand-over socket."""

    def __init__(self, pm: pluggy.PluginManager, runtime: Runtime, pidfile: PidFile | None,
                 notifier: Notifier | None, request_stop: Callable[[str], None]) -> None:
        self.pm = pm
        self.runtime = runtime
        self.pidfile = pidfile
        self.notifier = notifier
        self.request_stop = request_stop
        self.successor: upgrade.Successor | None = None  # an upgrade under way (no angel)
        self.sender: upgrade.Sender | None = None  # handing over to the new chassis
        self._tasks: set[asyncio.Task[Any]] = set()

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a background task until it ends (the loop keeps only weak references)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- no angel: this process starts the new chassis -----------------------------------

    def begin(self, config: Config, stopping: bool) -> None:
        """SIGUSR2 to the single process: start the new chassis, wait for its report."""
        if upgrade.refused("stopping" if stopping else None, self.successor):
            return
        notify = self.notifier.address if self.notifier is not None else None
        self.successor = upgrade.begin(config, listenfds.opened(), self.pidfile, notify)
        if self.successor is None:
            return
        loop = asyncio.get_running_loop()
        loop.add_reader(self.successor.listener.fd, self._check)
        self._keep(loop.create_task(self._watch(), name="chassis-upgrade"))

    def abandon(self) -> None:
        """A stop while the new chassis starts: the operator wants no chassis, stop it."""
        successor, self.successor = self.successor, None
        if successor is None:
            return
        asyncio.get_running_loop().remove_reader(successor.listener.fd)
        upgrade.abandoned(successor.pid)
        self._give_up(successor)

    def _give_up(self, successor: upgrade.Successor) -> None:
        successor.abandon()
        restore = self.pidfile.restore if self.pidfile is not None else None
        self._keep(asyncio.get_running_loop().create_task(_reap_later(successor, restore)))

    async def _watch(self) -> None:
        """Time-out and exit of the new chassis (its report wakes :meth:`_check` at once)."""
        while self.successor is not None:
            await asyncio.sleep(0.1)
            self._check()

    def _check(self) -> None:
        successor = self.successor
        if successor is None:
            return
        outcome = successor.check()
        if outcome is None:
            return
        self.successor = None
        asyncio.get_running_loop().remove_reader(successor.listener.fd)
        successor.listener.close()
        ready, why = outcome
        if not ready:
            upgrade.failed(why)
            self._give_up(successor)
            return
        if self.notifier is not None:
            self.notifier.send(f"MAINPID={successor.pid}")
        self.hand_over(successor.handoff, successor.pid)

    # -- an old worker: hand over, then stop ---------------------------------------------

    def hand_over(self, handoff: socket.socket, new_pid: int) -> None:
        """The new chassis is ready: every plugin's ``chassis_handover_out``, then the
        graceful stop (what could not move drains until --shutdown-timeout)."""
        if self.runtime.stopping:
            handoff.close()
            return
        self.runtime.succeeded_by = new_pid
        self.sender = upgrade.Sender(handoff)
        self._keep(asyncio.get_running_loop().create_task(
            self._hand_over(self.sender, new_pid), name="chassis-handover"))

    async def _hand_over(self, sender: upgrade.Sender, new_pid: int) -> None:
        moving = staying = 0
        for call in plugin_calls(self.pm, "chassis_handover_out"):
            try:
                result = call(runtime=self.runtime, send=sender.for_plugin(call.plugin_name))
                if inspect.isawaitable(result):
                    result = await result
            except Exception:
                log.log(logs.CRITICAL, "plugin %r raised in chassis_handover_out; its work "
                        "drains here", call.plugin_name, exc_info=True)
                continue
            if result:
                moving += int(result[0])
                staying += int(result[1])
        log.log(logs.MESSAGE, "upgrade: new chassis pid %d ready, handing over %d connections, "
                "draining %d", new_pid, moving, staying)
        self.request_stop(f"upgrade: the new chassis (pid {new_pid}) took over")

    def close(self) -> None:
        """At the worker's exit: the new workers see the end of what this one hands over."""
        if self.sender is not None:
            self.sender.close()

    # -- a new worker: take what the old ones hand over ----------------------------------

    def receive(self, sock: socket.socket) -> None:
        """Started by an upgrade and serving: read the hand-over socket (shared by every
        new worker: each item reaches one of them)."""
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_item, sock)

    def _on_item(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            item = upgrade.receive(sock)
        except BlockingIOError:
            return  # another worker took it
        except OSError as e:
            log.warning("upgrade: cannot read the hand-over socket: %s", e)
            item = None
        if item is None:  # every old worker is done
            loop.remove_reader(sock.fileno())
            log.debug("upgrade: the old chassis has handed over everything it could")
            return
        if not item.plugin:
            return
        try:
            result = self.pm.hook.chassis_handover_in(runtime=self.runtime, item=item)
        except Exception:
            log.log(logs.CRITICAL, "plugin %r raised in chassis_handover_in", item.plugin,
                    exc_info=True)
            item.close()
            return
        if result is None:
            log.warning("upgrade: nobody takes what plugin %r handed over (is it loaded?); "
                        "dropped", item.plugin)
            item.close()
        elif inspect.isawaitable(result):
            self._keep(loop.create_task(_guarded(result, item.plugin)))


async def _reap_later(successor: upgrade.Successor,
                      then: Callable[[], None] | None) -> None:
    """A failed new chassis was sent SIGTERM: collect its exit (no zombie), then ``then``
    (the pid file goes back once the new chassis released its own)."""
    for _ in range(600):
        if successor.reap() is not None:
            break
        await asyncio.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(successor.pid, signal.SIGKILL)
        successor.reap()
    if then is not None:
        then()


async def _guarded(result: Any, plugin: str) -> None:
    try:
        await result
    except Exception:
        log.log(logs.CRITICAL, "plugin %r failed to take a hand-over item", plugin, exc_info=True)
