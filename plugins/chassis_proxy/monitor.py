"""The replication monitor: roles that follow the servers, and no reads from a lagging
replica (``--proxy-monitor-user``, ``--proxy-backend-roles=auto``,
``--proxy-max-replication-lag``; docs/operations.md, "Replication-aware backends").

**One prober for the whole chassis.** Worker 1 (``worker_id`` 0) runs :class:`Monitor`:
every ``--proxy-monitor-interval`` it probes every backend at once, each probe bounded
by ``--proxy-monitor-timeout``, over one connection per backend that it keeps logged in
(a login per second would fill the servers' logs). It reads ``@@read_only``, the
replication channels (``SHOW ALL SLAVES STATUS`` on MariaDB, ``SHOW REPLICA STATUS`` on
MySQL) and Galera's ``wsrep_ready``/``wsrep_local_state``, and sends the reports to every
worker over the chassis control channel (op ``monitor_update``, answered by
:func:`apply_reports` in each worker, itself included).

**Restarts.** A worker that starts later (or again, under ``--keepalive``) asks worker 1
for its last reports (op ``monitor_snapshot``) before its first update arrives. While
worker 1 itself is being restarted, the others keep the last reports they had; its new
monitor probes within one interval of its start.

**One log line per change**: only worker 1 logs what changed (a role, a replication
state, a probe that fails or recovers); the others apply the same reports silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from chassis_mysql.errors import ProtocolError

from chassis.control import ControlChannel
from chassis.listen import Address
from chassis.logs import MESSAGE
from chassis_proxy.backends import Backends
from chassis_proxy.monitor_client import MonitorError, MonitorSession, QueryError, Row
from chassis_proxy.replication import ServerReport, judge, role, summarise_channels, why
from chassis_proxy.settings import MonitorSettings

log = logging.getLogger("chassis.proxy.monitor")

#: Seconds worker 1 waits for the other workers to take an update (or for a snapshot).
CONTROL_TIMEOUT = 1.0

Publish = Callable[[list[ServerReport]], Awaitable[None]]

#: MySQL before 8.0.22 knows SHOW SLAVE STATUS only (ER_PARSE_ERROR on the new form).
_PARSE_ERROR = 1064
#: ER_SPECIFIC_ACCESS_DENIED_ERROR: the monitor account lacks a privilege.
_ACCESS_DENIED = 1227
_GALERA = "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_local_state')"


class Monitor:
    """Worker 1's probe loop; ``last`` holds the latest reports (for ``monitor_snapshot``)."""

    def __init__(self, settings: MonitorSettings, addresses: Sequence[Address],
                 publish: Publish) -> None:
        self.settings = settings
        self.addresses = list(addresses)
        self.publish = publish
        self.last: list[ServerReport] = []
        #: Probes per backend address and outcome ("ok", "error"), for the metrics.
        self.probes: Counter[tuple[str, str]] = Counter()
        self._sessions: dict[str, MonitorSession] = {}
        self._replica_sql: dict[str, str] = {}

    async def run(self) -> None:
        """Probe, publish, wait for the next interval; until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                try:
                    self.last = await self.probe_all()
                    await self.publish(self.last)
                except Exception:  # a bug here must not end the monitor for good
                    log.exception("replication monitor round failed")
                await asyncio.sleep(max(0.0, self.settings.interval - (loop.time() - started)))
        finally:
            self.close()

    async def probe_all(self) -> list[ServerReport]:
        return list(await asyncio.gather(*(self.probe(addr) for addr in self.addresses)))

    async def probe(self, addr: Address) -> ServerReport:
        """One bounded probe of the backend at ``addr``; a failure is a report with ``error``."""
        name = str(addr)
        try:
            async with asyncio.timeout(self.settings.timeout):
                report = await self._probe(name, addr)
            self.probes[name, "ok"] += 1
            return report
        except TimeoutError:
            error = f"no answer within {self.settings.timeout:g} s (--proxy-monitor-timeout)"
        except QueryError as e:
            error = str(e)
            if e.code == _ACCESS_DENIED:
                error += (f"; grant the monitor account what it needs: GRANT SLAVE MONITOR, "
                          f"REPLICATION CLIENT ON *.* TO '{self.settings.user}'")
        except MonitorError as e:
            error = str(e)
        except ProtocolError as e:
            error = f"protocol error: {e}"
        except OSError as e:
            error = e.strerror or str(e)
        except ValueError as e:  # a value the monitor cannot read (Seconds_Behind_Master ...)
            error = f"unexpected answer: {e}"
        self._drop(name)
        self.probes[name, "error"] += 1
        return ServerReport(address=name, error=error)

    async def _probe(self, name: str, addr: Address) -> ServerReport:
        session = self._sessions.get(name)
        if session is None:
            session = await MonitorSession.open(addr, self.settings.user, self.settings.password)
            self._sessions[name] = session
        (row,) = await session.query("SELECT @@global.read_only AS read_only")
        read_only = (row["read_only"] or "0") not in ("0", "OFF")
        channels = await self._channels(name, session)
        galera = {(r.get("Variable_name") or "").lower(): r.get("Value") for r in await session.query(_GALERA)}
        # A server built with wsrep but without a provider (Debian's MariaDB) has
        # wsrep_ready=OFF too; only a loaded provider reports wsrep_local_state.
        state = galera.get("wsrep_local_state")
        galera_node = state is not None
        return ServerReport(
            address=name, read_only=read_only, **summarise_channels(channels),
            galera_ready=(galera.get("wsrep_ready") or "").upper() == "ON" if galera_node else None,
            galera_state=int(state) if state is not None and state.isdigit() else None,
        )

    async def _channels(self, name: str, session: MonitorSession) -> list[Row]:
        sql = self._replica_sql.get(name)
        if sql is None:
            sql = "SHOW ALL SLAVES STATUS" if session.is_mariadb else "SHOW REPLICA STATUS"
        try:
            rows = await session.query(sql)
        except QueryError as e:
            if e.code != _PARSE_ERROR or sql == "SHOW SLAVE STATUS":
                raise
            sql = "SHOW SLAVE STATUS"
            rows = await session.query(sql)
        self._replica_sql[name] = sql
        return rows

    def _drop(self, name: str) -> None:
        session = self._sessions.pop(name, None)
        if session is not None:
            session.close()

    def close(self) -> None:
        for name in list(self._sessions):
            self._drop(name)


def apply_reports(backends: Backends, reports: Iterable[ServerReport],
                  settings: MonitorSettings, *, announce: bool) -> None:
    """Set each backend's replication info (and with roles=auto its type) from the
    reports; ``announce``: log each change (worker 1 only, so one line per change)."""
    say = log.log if announce else _quiet
    by_address = {str(b.addr): b for b in backends}
    for report in reports:
        backend = by_address.get(report.address)
        if backend is None:
            continue  # a backend a reload removed
        before = backend.replication
        info = judge(report, settings.max_lag, before)
        backend.replication = info
        if info.error and info.error != before.error:
            say(logging.WARNING, "backend %s: the replication monitor cannot probe it: %s",
                backend.addr, info.error)
        elif before.error and not info.error:
            say(MESSAGE, "backend %s: the replication monitor reaches it again", backend.addr)
        if info.state != before.state or info.stale != before.stale:
            effect = ""
            if info.stale != before.stale:
                effect = "; no reads until it catches up" if info.stale else "; takes reads again"
            say(MESSAGE, "backend %s: replication %s -> %s (%s)%s", backend.addr, before.state,
                info.state, why(report, info), effect)
        kind = role(report) if settings.roles_auto else None
        if kind is not None:
            old = backend.type
            if backend.set_type(kind):
                say(MESSAGE, "backend %s: role %s -> %s (read_only=%s)", backend.addr,
                    old.name.lower(), kind.name.lower(), "ON" if report.read_only else "OFF")


def _quiet(level: int, msg: str, *args: Any) -> None:
    """The other workers apply the same change without a word (worker 1 said it)."""


def reports_from(data: Any) -> list[ServerReport]:
    """Reports out of a control request (a list of dicts); malformed ones raise ValueError."""
    if not isinstance(data, list):
        raise ValueError("monitor reports must be a list")
    try:
        return [ServerReport.from_dict(d) for d in data]
    except TypeError as e:
        raise ValueError(f"malformed monitor report: {e}") from None


def publisher(control: ControlChannel | None, apply_here: Callable[[list[ServerReport]], None]) -> Publish:
    """How worker 1 shares its reports: a ``monitor_update`` to every worker (itself
    included), or straight to its own backends when it has no control channel."""

    async def publish(reports: list[ServerReport]) -> None:
        if control is None:
            apply_here(reports)
            return
        request = {"plugin": "proxy", "op": "monitor_update",
                   "reports": [r.as_dict() for r in reports]}
        for reply in await control.broadcast(request, timeout=CONTROL_TIMEOUT):
            if "error" in reply:  # a worker being restarted: it catches up when back
                log.debug("monitor update not delivered: %s", reply["error"])

    return publish


async def catch_up(control: ControlChannel, apply_here: Callable[[list[ServerReport]], None]) -> None:
    """A worker other than 1, just started: take worker 1's last reports, if it has any."""
    reply = await control.ask(0, {"plugin": "proxy", "op": "monitor_snapshot"},
                              timeout=CONTROL_TIMEOUT)
    for answer in reply.get("results") or ():
        if isinstance(answer, dict) and answer.get("reports"):
            try:
                apply_here(reports_from(answer["reports"]))
            except ValueError as e:
                log.warning("worker 1's monitor reports are unusable: %s", e)
            return
