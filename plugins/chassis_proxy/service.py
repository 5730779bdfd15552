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
from typing import TYPE_CHECKING, Any

# Imported with the service, in chassis_apply_config: before --user drops privileges, so
# a worker that can no longer read the installation has every module it needs.
from chassis.control import ControlChannel
from chassis_proxy import handoff, health, monitor, proxy_header
from chassis_proxy.backends import Backends
from chassis_proxy.connection import accept
from chassis_proxy.hooks import UNMONITORED, ScriptHost
from chassis_proxy.queries import QueryRecorder
from chassis_proxy.settings import MonitorSettings, ProxySettings
from chassis_proxy.stats import Counters

if TYPE_CHECKING:
    from chassis.upgrade import Send
    from chassis_proxy.connection import ProxyConnection

log = logging.getLogger("chassis.proxy")

#: How often a stopping worker looks for clients whose command has ended (seconds).
STOP_POLL = 0.05


class ProxyService:
    """Accepts clients and owns every :class:`ProxyConnection` of this worker."""

    def __init__(self, settings: ProxySettings, sock: socket.socket | None = None,
                 script_host: ScriptHost | None = None, worker_id: int = 0,
                 worker_count: int = 1, recorder: QueryRecorder | None = None) -> None:
        self.settings = settings
        self.sock = sock
        self.script_host = script_host
        #: Query digests and the slow log (None when both are off).
        self.recorder = recorder
        self.worker_id = worker_id
        self.worker_count = max(1, worker_count)
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
        self._control: ControlChannel | None = None
        #: The monitor's reports this worker applied last (applied again after a reload).
        self._reports: list[monitor.ServerReport] = []
        self._next_id = 0
        self._idle: asyncio.Event | None = None
        self.accepting = False
        self.stats = Counters()  # this worker's totals, for the admin plugin
        #: Script hosts a reload replaced, closed once their last client is gone.
        self._retired_hosts: list[ScriptHost] = []

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
        self._start_tasks()

    def _start_tasks(self) -> None:
        """The sweeper and the health checks, with the current settings."""
        assert self.loop is not None
        self._sweeper = self.loop.create_task(self._sweep())
        if self.settings.health_check_interval > 0:
            self._health = self.loop.create_task(health.run(
                self.backends, self.settings.health_check_interval, self.settings.connect_timeout,
                proxy_header.local_header(self.settings)))

    def reconfigure(self, settings: ProxySettings, script_host: ScriptHost | None) -> None:
        """A reload: new clients get ``settings`` and ``script_host``; clients already
        connected keep the settings and the script instance they started with.

        The listener stays (its options need a restart). The backend list is updated in
        place (:meth:`Backends.update`); a replaced script host is closed when its last
        client has gone.
        """
        self.settings = settings
        self.backends.update(settings.backends, settings.pool_max_idle, settings.pool_max_idle_age)
        for conn in self.connections:  # proxy.connection.backend_ndx follows the new order
            st = conn.state
            if st.backend is not None:
                st.backend_index = st.backend.index
        if script_host is not self.script_host:
            old = self.script_host
            self.script_host = script_host
            if old is not None:
                self._retired_hosts.append(old)
                self._close_unused_hosts()
        self._reload_monitor()
        if self.accepting:
            for task in (self._sweeper, self._health):
                if task is not None:
                    task.cancel()
            self._health = None
            self._start_tasks()

    def _close_unused_hosts(self) -> None:
        in_use = {id(conn.script_host) for conn in self.connections}
        for host in [h for h in self._retired_hosts if id(h) not in in_use]:
            self._retired_hosts.remove(host)
            try:
                host.close()
            except Exception:
                log.exception("closing a replaced script host failed")

    def start_monitor(self, control: ControlChannel | None) -> None:
        """Worker 1 probes the backends and tells every worker; any other worker first
        takes worker 1's last reports (it may have been restarted). See chassis_proxy.monitor."""
        self._control = control
        settings = self.settings.monitor
        if settings is None or self.loop is None:
            return
        if self.worker_id == 0:
            self._start_prober(settings)
        elif control is not None:
            self._monitor_task = self.loop.create_task(monitor.catch_up(control, self.apply_reports))

    def _start_prober(self, settings: MonitorSettings) -> None:
        assert self.loop is not None
        self.monitor = monitor.Monitor(settings, [b.addr for b in self.backends],
                                       monitor.publisher(self._control, self.apply_reports))
        self._monitor_task = self.loop.create_task(self.monitor.run())

    def _stop_prober(self) -> None:
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            self._monitor_task = None
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None

    def _reload_monitor(self) -> None:
        """After a reload: the last reports at once (the kept backends' live roles, which
        the reload reset to the command line's), and worker 1 probes the new list."""
        if self.settings.monitor is None:
            for b in self.backends:
                b.replication = UNMONITORED
        else:
            self.apply_reports(self._reports)
        if self.worker_id == 0 and self.loop is not None:
            self._stop_prober()
            if self.settings.monitor is not None:
                self._start_prober(self.settings.monitor)

    def apply_reports(self, reports: list[monitor.ServerReport]) -> None:
        """What worker 1's monitor found, applied to this worker's backends (it alone logs)."""
        self._reports = reports
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
        """Close the clients at rest; have the others closed once their command is
        answered (asked again at every poll: a client may have logged in since)."""
        for conn in list(self.connections):
            if conn.moving:  # an upgrade hands it over once it rests (chassis_proxy.handoff)
                continue
            if conn.at_rest():
                conn.close("proxy is shutting down")
            else:
                conn.close_after_command()

    def close_all(self) -> None:
        if self.connections:
            log.warning("closing %d client connection(s) still open at the shutdown deadline",
                        len(self.connections))
        for conn in list(self.connections):
            conn.close("proxy is shutting down")

    def shutdown(self, keep_socket_file: bool = False) -> None:
        """Release everything (also after a failed start). ``keep_socket_file``: a new
        chassis took over our unix socket (an upgrade), its file stays."""
        self.accepting = False
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._health is not None:
            self._health.cancel()
        self._stop_prober()
        if self._server is not None:
            self._server.close()
        self.close_all()
        self.backends.close_pools()
        if self.sock is not None:
            self.sock.close()
            path = self.settings.listen.path if self.settings.listen is not None else None
            if path and not keep_socket_file:  # only the worker that bound it has a socket here
                with contextlib.suppress(OSError):
                    os.unlink(path)
        for host in [*self._retired_hosts, self.script_host]:
            if host is None:
                continue
            try:
                host.close()
            except Exception:
                log.exception("closing the script host failed")
        self._retired_hosts.clear()
        if self.recorder is not None:
            self.recorder.close()

    # an upgrade (SIGUSR2) ------------------------------------------------------------

    def hand_over(self, send: Send) -> tuple[int, int]:
        """The new chassis is ready: resting relayed connections move to it as they come
        to rest (:mod:`chassis_proxy.handoff`); (how many may move, how many stay)."""
        return handoff.Handoff(self, self.connections, send).start()

    async def adopt(self, state: dict[str, Any], fds: list[int]) -> None:
        """A connection the chassis we replace handed over: relay it here."""
        await handoff.adopt(self, state, fds)

    # connections --------------------------------------------------------------------

    def next_connection_id(self) -> int:
        """Ids unique over the workers of a chassis (worker 1 of 2: 1, 3, 5...; worker 2:
        2, 4, 6...): the admin console's ``KILL <id>`` names one connection, the one its
        log lines call ``conn <id>``."""
        self._next_id += 1
        return (self._next_id - 1) * self.worker_count + self.worker_id + 1

    def register(self, conn: ProxyConnection) -> None:
        self.connections.add(conn)

    def unregister(self, conn: ProxyConnection) -> None:
        self.connections.discard(conn)
        if self._retired_hosts:
            self._close_unused_hosts()
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
