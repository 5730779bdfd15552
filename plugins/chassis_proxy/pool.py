"""The connection pool: idle, authenticated server connections, per backend and user.

MySQL Proxy 0.8's pool (reference section 7.5), driven by scripts: setting
``proxy.connection.backend_ndx = 0`` parks the client's server connection here,
``backend_ndx = N`` takes one of backend N's. What MySQL Proxy lacked is added:

* a connection handed to another client is always reset first (the connection code
  sends COM_CHANGE_USER when a new client logs in on it, COM_RESET_CONNECTION when a
  logged-in client of the same user takes it), so transactions, temporary tables, user
  variables and prepared statements never pass from one client to the next;
* a pool holds at most ``limit`` idle connections (``--proxy-pool-max-idle``; the
  longest-idle one is closed to make room), and a connection idle longer than
  ``max_age`` seconds (``--proxy-pool-max-idle-age``) is closed by a timer;
* an idle connection the server closes (wait_timeout, KILL, restart) or writes to is
  dropped at once.

``min_idle_connections`` and ``max_idle_connections`` are the scripts' numbers, as in
MySQL Proxy: advisory, except that ``min_idle_connections`` decides when a connection
of another user may be taken in ``connect_server``.

A client only ever gets back, without a reset, a connection it used itself before;
:attr:`ServerLink.last_client` records who that was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from chassis_mysql.packets import is_err

from chassis_proxy.link import ServerLink

log = logging.getLogger("chassis.proxy.pool")

#: ``--proxy-pool-max-idle``: idle connections kept per backend.
DEFAULT_MAX_IDLE = 64
#: ``--proxy-pool-max-idle-age``: seconds an idle connection is kept.
DEFAULT_MAX_IDLE_AGE = 300.0

class Pool:
    """The idle connections of one backend: a FIFO per username (section 7.5)."""

    def __init__(self, backend_name: str, limit: int = DEFAULT_MAX_IDLE,
                 max_age: float = DEFAULT_MAX_IDLE_AGE) -> None:
        self.backend_name = backend_name
        self.limit = limit
        self.max_age = max_age
        # the scripts' numbers (proxy.global.backends[i].pool)
        self.min_idle_connections = 0
        self.max_idle_connections = 0
        self._idle: dict[str, deque[ServerLink]] = {}
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.taken = 0  # idle connections handed to a client so far (the metrics)

    # what scripts and the admin console see ------------------------------------------

    @property
    def idle_count(self) -> int:
        return self._count

    def cur_idle_connections(self, username: str) -> int:
        """Idle connections of ``username``; ``""``: of every user."""
        if username == "":
            return self._count
        queue = self._idle.get(username)
        return len(queue) if queue else 0

    # parking and taking ------------------------------------------------------------------

    def park(self, link: ServerLink) -> bool:
        """Keep ``link`` idle; False (and the link closed) when it cannot be kept."""
        ch = link.channel
        if self.closed or ch.closed or ch.transport is None or not link.authenticated:
            link.close()
            return False
        if ch.reader.buffered:
            log.warning("backend %s: connection (thread %d) has unread data from the server; "
                        "closed instead of pooled", self.backend_name, link.peer.thread_id)
            link.close()
            return False
        if self.limit <= 0:
            log.debug("backend %s: pooling is off (--proxy-pool-max-idle=0); connection "
                      "(thread %d) closed", self.backend_name, link.peer.thread_id)
            link.close()
            return False
        while self._count >= self.limit:
            oldest = min((q[0] for q in self._idle.values() if q), key=lambda lk: lk.parked_at)
            self._drop(oldest, f"the pool is full (--proxy-pool-max-idle={self.limit})",
                       logging.DEBUG)
        link.parked_at = time.monotonic()
        ch.sink = lambda data: self._unexpected(link, data)
        ch.on_lost = lambda _ch, exc: self._lost(link, exc)
        self._idle.setdefault(link.username, deque()).append(link)
        self._count += 1
        self._arm_timer()
        return True

    def take(self, username: str, client_id: int, profile: tuple[int, int] | None,
             any_user: bool, tls: bool | None = None,
             origin: str | None = None) -> ServerLink | None:
        """An idle connection for a client, or None.

        First the client's own (one it used before: no reset needed), then the oldest of
        ``username`` whose login ``profile`` matches (``None``: any). With ``any_user``
        (``connect_server``, where the user is not known yet), else the first of a user
        that has more than ``min_idle_connections`` idle, as MySQL Proxy did. Only
        connections whose leg is TLS as ``tls`` says are considered (``None``: any), and
        only those whose server was told the client address ``origin`` in a PROXY header
        (the server's grants saw that address).
        """
        queue = self._idle.get(username)
        if queue:
            fits = [lk for lk in queue if (tls is None or lk.tls == tls) and lk.origin == origin]
            found = next((lk for lk in fits if lk.last_client == client_id), None)
            if found is None:
                found = next((lk for lk in fits if profile is None or lk.profile == profile), None)
            if found is not None:
                self.taken += 1
                return self._remove(found)
        if any_user:
            for queue in self._idle.values():
                if len(queue) > self.min_idle_connections:
                    found = next((lk for lk in queue if (tls is None or lk.tls == tls)
                                  and lk.origin == origin), None)
                    if found is not None:
                        self.taken += 1
                        return self._remove(found)
        return None

    def close_all(self) -> None:
        """Close every idle connection (shutdown); later parks close their connection."""
        self.closed = True
        for queue in list(self._idle.values()):
            for link in list(queue):
                self._remove(link)
                link.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # internals -------------------------------------------------------------------------

    def _remove(self, link: ServerLink) -> ServerLink:
        queue = self._idle[link.username]
        queue.remove(link)
        if not queue:
            del self._idle[link.username]
        self._count -= 1
        link.channel.sink = None
        link.channel.on_lost = None
        return link

    def _contains(self, link: ServerLink) -> bool:
        queue = self._idle.get(link.username)
        return queue is not None and link in queue

    def _drop(self, link: ServerLink, why: str, level: int = logging.INFO) -> None:
        if not self._contains(link):
            return
        self._remove(link)
        link.close()
        log.log(level, "backend %s: idle connection (thread %d, user %r) closed: %s",
                self.backend_name, link.peer.thread_id, link.username, why)

    def _lost(self, link: ServerLink, exc: BaseException | None) -> None:
        self._drop(link, f"the server closed it{f' ({exc})' if exc else ''} "
                         "(wait_timeout, KILL or a restart)")

    def _unexpected(self, link: ServerLink, data: bytes) -> None:
        # MariaDB and MySQL write an ERR before closing a connection they kill or time
        # out; any data means the connection is no longer a clean idle session.
        self._drop(link, f"the server sent {len(data)} bytes while it was idle",
                   logging.INFO if is_err(data[4:]) else logging.WARNING)

    def _arm_timer(self) -> None:
        if self._timer is not None or self.max_age <= 0 or not self._count:
            return
        oldest = min(q[0].parked_at for q in self._idle.values() if q)
        delay = max(0.0, oldest + self.max_age - time.monotonic()) + 0.01
        self._timer = asyncio.get_running_loop().call_later(delay, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for longer than ``max_age``."""
        self._timer = None
        cutoff = time.monotonic() - self.max_age
        for queue in list(self._idle.values()):
            for link in [lk for lk in queue if lk.parked_at <= cutoff]:
                self._drop(link, f"idle for more than {self.max_age:g} s "
                                 "(--proxy-pool-max-idle-age)", logging.DEBUG)
        self._arm_timer()
