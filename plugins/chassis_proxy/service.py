"""One worker's proxy: the listener, the live connections, the idle sweeper and the stop.

Created by the plugin's ``chassis_apply_config`` hook (which binds the socket, as root if
need be), started by ``chassis_serve`` and drained by ``chassis_stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING

# Imported with the service, in chassis_apply_config: before --user drops privileges, so
# a worker that can no longer read the installation has every module it needs.
from chassis.control import ControlChannel
from chassis_proxy import health, monitor
from chassis_proxy.backends import Backends
from chassis_proxy.connection import accept
from chassis_proxy.hooks import ScriptHost
from chassis_proxy.settings import ProxySettings
from chassis_proxy.stats import Counters

if TYPE_CHECKING:
    from chassis_proxy.connection import ProxyConnection

log = logging.getLogger("chassis.proxy")

#: How often a stopping worker looks for clients whose command has ended (seconds).
STOP_POLL = 0.05


class ProxyService:
    """Accepts clients and owns every :class:`ProxyConnection` of this worker."""

    def __init__(self, settings: ProxySettings, sock: socket.socket | None = None,
                 script_host: ScriptHost | None = None, worker_id: int = 0) -> None:
        self.settings = settings
        self.sock = sock
        self.script_host = script_host
        self.worker_id = worker_id
        self.backends = Backends(settings.backends, settings.pool_max_idle,
                                 settings.pool_max_idle_age)
        self.connections: set[ProxyConnection] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        #: Worker 1's replication monitor (None elsewhere, or without --proxy-monitor-user).
        self.monitor: monitor.Monitor | None = None
        self._monitor_task: asyncio.Task[None] | None = None
        self._next_id = 0
        self._idle: asyncio.Event | None = None
        self.accepting = False
        self.stats = Counters()  # this worker's totals, for the admin plugin

    # life cycle ---------------------------------------------------------------------

    async def serve(self) -> None:
        """Start accepting on the bound socket (no-op with ``--no-proxy``)."""
        self.loop = asyncio.get_running_loop()
        if self.sock is None:
            return
        # backlog: asyncio listens again with its own default (100) unless told
        self._server = await self.loop.create_server(lambda: accept(self), sock=self.sock,
                                                     backlog=self.settings.backlog)
        self.accepting = True
        self._sweeper = self.loop.create_task(self._sweep())
        if self.settings.health_check_interval > 0:
            self._health = self.loop.create_task(health.run(
                self.backends, self.settings.health_check_interval, self.settings.connect_timeout))

    def start_monitor(self, control: ControlChannel | None) -> None:
        """Worker 1 probes the backends and tells every worker; any other worker first
        takes worker 1's last reports (it may have been restarted). See chassis_proxy.monitor."""
        settings = self.settings.monitor
        if settings is None or self.loop is None:
            return
        if self.worker_id == 0:
            self.monitor = monitor.Monitor(settings, [b.addr for b in self.backends],
                                           monitor.publisher(control, self.apply_reports))
            self._monitor_task = self.loop.create_task(self.monitor.run())
        elif control is not None:
            self._monitor_task = self.loop.create_task(monitor.catch_up(control, self.apply_reports))

    def apply_reports(self, reports: list[monitor.ServerReport]) -> None:
        """What worker 1's monitor found, applied to this worker's backends (it alone logs)."""
        if self.settings.monitor is not None:
            monitor.apply_reports(self.backends, reports, self.settings.monitor,
                                  announce=self.worker_id == 0)

    @property
    def port(self) -> int | None:
        """The TCP port actually listened on (useful with port 0)."""
        if self.sock is None or self.sock.family == socket.AF_UNIX:
            return None
        return int(self.sock.getsockname()[1])

    async def stop(self, deadline: float) -> None:
        """Stop accepting; close clients at rest at once (their server connections get
        COM_QUIT); let running commands finish until ``deadline``, closing each client as
        its command ends; then close what is left."""
        self.accepting = False
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._close_resting()
        if self.connections:
            log.info("waiting for %d client connection(s) to finish", len(self.connections))
        else:
            self._idle.set()
        # The chassis cancels this at the deadline; chassis_shutdown closes what is left.
        while not self._idle.is_set() and loop.time() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), min(STOP_POLL, max(0.0, deadline - loop.time())))
            self._close_resting()
        self.close_all()

    def _close_resting(self) -> None:
        for conn in list(self.connections):
            if conn.at_rest():
                conn.close("proxy is shutting down")

    def close_all(self) -> None:
        if self.connections:
            log.warning("closing %d client connection(s) still open at the shutdown deadline",
                        len(self.connections))
        for conn in list(self.connections):
            conn.close("proxy is shutting down")

    def shutdown(self) -> None:
        """Release everything (also after a failed start)."""
        self.accepting = False
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._health is not None:
            self._health.cancel()
        if self._monitor_task is not None:
            self._monitor_task.cancel()
        if self.monitor is not None:
            self.monitor.close()
        if self._server is not None:
            self._server.close()
        self.close_all()
        self.backends.close_pools()
        if self.sock is not None:
            self.sock.close()
            path = self.settings.listen.path if self.settings.listen is not None else None
            if path:  # only the worker that bound it has a socket here
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if self.script_host is not None:
            try:
                self.script_host.close()
            except Exception:
                log.exception("closing the script host failed")

    # connections --------------------------------------------------------------------

    def next_connection_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def register(self, conn: ProxyConnection) -> None:
        self.connections.add(conn)

    def unregister(self, conn: ProxyConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._idle is not None:
            self._idle.set()

    def over_limit(self) -> bool:
        limit = self.settings.max_connections
        return limit > 0 and len(self.connections) >= limit

    async def _sweep(self) -> None:
        """Close connections idle past --proxy-read-timeout or stuck past --proxy-write-timeout.

        One task per worker instead of a timer per connection: the relay only stores the
        last buffer it saw, and this loop notices whether it changed.
        """
        s = self.settings
        shortest = min(s.write_timeout, s.idle_timeout or s.write_timeout)
        interval = min(max(shortest / 4, 0.05), 30.0)
        while True:
            await asyncio.sleep(interval)
            now = asyncio.get_running_loop().time()
            for conn in list(self.connections):
                conn.check_timeouts(now)
                conn.fold_counters()
