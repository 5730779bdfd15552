"""The backends of one worker: their state, their type and which one a new client gets.

Selection (no script, or a script that does not set ``backend_ndx``), MySQL Proxy 0.8.5's
rule: among the read/write backends that are not DOWN (nor OFFLINE), the one with the
fewest connected clients of this worker; a tie goes to the first in the order of
``--proxy-backend-addresses``. So several read/write backends share the clients (least
connections), and a DOWN one is skipped (fail-over). Read-only backends are only used
when a script picks them, as in MySQL Proxy.

With the replication monitor (:mod:`chassis_proxy.monitor`) a backend's type follows
its server's ``read_only`` (``--proxy-backend-roles=auto``), and a backend whose
replication lags or is stopped (``--proxy-max-replication-lag``) is ``stale``: no new
clients here, no reads from ``rw-splitting.lua``.

A backend that refuses a connection or times out is marked DOWN; after
:data:`DOWN_RETRY_SECONDS` it is reset to UNKNOWN (checked when a client connects, as
in MySQL Proxy: there is no active health check) and gets clients again.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

from chassis.listen import Address
from chassis.logs import MESSAGE
from chassis_proxy.hooks import UNMONITORED, AddressInfo, BackendState, BackendType, ReplicationInfo
from chassis_proxy.pool import DEFAULT_MAX_IDLE, DEFAULT_MAX_IDLE_AGE, Pool
from chassis_proxy.settings import BackendAddress
from chassis_proxy.stats import Counters

log = logging.getLogger("chassis.proxy.backends")

#: Seconds a DOWN backend waits before it is tried again (MySQL Proxy: 4 s).
DOWN_RETRY_SECONDS = 4.0


def address_info(address: Address) -> AddressInfo:
    """The Lua-visible address object of a configured address."""
    if address.path is not None:
        return AddressInfo(name=address.path, address=address.path, port=None, family=socket.AF_UNIX)
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    return AddressInfo(name=str(address), address=address.host, port=address.port, family=family)


class Backend:
    """One backend server (``proxy.global.backends[i]``); implements hooks.BackendView."""

    __slots__ = (
        "_state",
        "_type",
        "addr",
        "address",
        "admin_state",
        "connected_clients",
        "down_reason",
        "down_since",
        "index",
        "pool",
        "replication",
        "stats",
        "uuid",
    )

    def __init__(self, config: BackendAddress, index: int, pool_limit: int = DEFAULT_MAX_IDLE,
                 pool_max_age: float = DEFAULT_MAX_IDLE_AGE) -> None:
        self.addr = config.address
        self.address = address_info(config.address)
        self._type = BackendType.RO if config.read_only else BackendType.RW
        self._state = BackendState.UNKNOWN
        #: A state an operator set (admin console): DOWN or OFFLINE stays until the operator
        #: changes it; health checks, retries and connects never flip it.
        self.admin_state: BackendState | None = None
        self.connected_clients = 0
        self.uuid: str | None = None
        self.index = index  # 1-based, as scripts see it
        self.down_since = 0.0
        self.down_reason = ""
        self.stats = Counters()  # for the admin plugin
        self.pool = Pool(str(config.address), pool_limit, pool_max_age)  # idle server connections
        #: What the replication monitor last learnt (chassis_proxy.monitor); stale: no reads.
        self.replication: ReplicationInfo = UNMONITORED

    @property
    def type(self) -> BackendType:
        return self._type

    def set_type(self, kind: BackendType) -> bool:
        """The role the replication monitor saw (``--proxy-backend-roles=auto``); True
        when it changed (the monitor logs it, once for all workers)."""
        changed = kind != self._type
        self._type = kind
        return changed

    @property
    def state(self) -> BackendState:
        return self._state

    @state.setter
    def state(self, value: BackendState) -> None:
        """Scripts (and the admin plugin) may set the state; the change is logged."""
        self.set_state(BackendState(value), "set by a script")

    def set_state(self, state: BackendState, reason: str) -> None:
        """A state change seen by the proxy (connects, health checks, scripts); an
        operator's DOWN or OFFLINE holds until the operator lifts it."""
        if self.admin_state is not None and state != self.admin_state:
            log.debug("backend %s: stays %s (set from the admin console); not %s (%s)",
                      self.addr, self.admin_state.name, state.name, reason)
            return
        self._change(state, reason)

    def set_admin_state(self, state: BackendState) -> None:
        """The operator's word (admin console): DOWN and OFFLINE are sticky; UP and
        UNKNOWN hand the backend back to health checks and connects."""
        sticky = state in (BackendState.DOWN, BackendState.OFFLINE)
        self.admin_state = state if sticky else None
        self._change(state, "set from the admin console")

    def _change(self, state: BackendState, reason: str) -> None:
        if state == self._state:
            if state == BackendState.DOWN:
                self.down_since = time.monotonic()
                self.down_reason = reason
            return
        log.log(MESSAGE, "backend %s: %s -> %s (%s)", self.addr, self._state.name, state.name, reason)
        self._state = state
        if state == BackendState.DOWN:
            self.down_since = time.monotonic()
            self.down_reason = reason

    def mark_up(self) -> None:
        self.stats.connections += 1
        self.set_state(BackendState.UP, "connected")

    def mark_down(self, reason: str) -> None:
        self.stats.errors += 1
        self.set_state(BackendState.DOWN, reason)

    def __repr__(self) -> str:
        return f"Backend({self.addr}, {self._type.name}, {self._state.name})"


class Backends:
    """The ordered backend list of a worker, with the default selection rule."""

    def __init__(self, configured: list[BackendAddress], pool_limit: int = DEFAULT_MAX_IDLE,
                 pool_max_age: float = DEFAULT_MAX_IDLE_AGE) -> None:
        self.items = [Backend(c, i + 1, pool_limit, pool_max_age) for i, c in enumerate(configured)]
        self._last_check = 0.0

    def __iter__(self) -> Iterator[Backend]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def revive(self) -> None:
        """Reset DOWN backends whose retry delay has passed to UNKNOWN (at most once a second)."""
        now = time.monotonic()
        if now - self._last_check < 1.0:
            return
        self._last_check = now
        for b in self.items:
            if b.state == BackendState.DOWN and b.admin_state is None and \
                    now - b.down_since > DOWN_RETRY_SECONDS:
                b.set_state(BackendState.UNKNOWN, f"down for more than {DOWN_RETRY_SECONDS:g} s, will retry")

    def candidates(self, exclude: set[int]) -> Iterator[Backend]:
        """Read/write backends that are not DOWN (or OFFLINE) nor stale (a lagging replica,
        --proxy-max-replication-lag), in order, minus ``exclude``."""
        for b in self.items:
            if b.index in exclude or b.type != BackendType.RW or b.replication.stale:
                continue
            if b.state in (BackendState.UP, BackendState.UNKNOWN):
                yield b

    def pick(self, exclude: set[int]) -> Backend | None:
        """The default choice: the candidate with the fewest connected clients, the first
        in order on a tie (MySQL Proxy 0.8.5's least connections)."""
        best: Backend | None = None
        for b in self.candidates(exclude):
            if best is None or b.connected_clients < best.connected_clients:
                best = b
        return best

    def describe_down(self) -> str:
        """Why no read/write backend can take a client, for the client's ERR message
        (read-only backends that are up are named too: only scripts send clients there)."""
        now = time.monotonic()
        parts = []
        for b in self.items:
            if b.type != BackendType.RW:
                continue
            if b.state == BackendState.DOWN:
                parts.append(f"{b.addr} ({b.down_reason}; down for {now - b.down_since:.1f} s, "
                             f"retried after {DOWN_RETRY_SECONDS:g} s)")
            elif b.replication.stale:
                parts.append(f"{b.addr} (replication {b.replication.state}: no reads "
                             "under --proxy-max-replication-lag)")
            else:
                parts.append(f"{b.addr} ({b.state.name.lower()})")
        if not parts and any(b.replication.state != "unmonitored" for b in self.items):
            return ("no backend is read/write now: every server has read_only=ON "
                    "(--proxy-backend-roles=auto; a switchover in progress?)")
        return "; ".join(parts) or "no read/write backend is configured"

    def no_backend_message(self, tried: list[str]) -> str:
        """The ERR a client gets when no read/write backend took it: what was tried, and
        the read-only backends that are up (only scripts send clients there)."""
        listing = "; ".join(tried) if tried else self.describe_down()
        ro_up = [str(b.addr) for b in self.items
                 if b.type == BackendType.RO and b.state in (BackendState.UP, BackendState.UNKNOWN)]
        if not ro_up:
            return f"(proxy) all backends are down: {listing}"
        many = len(ro_up) > 1
        return (f"(proxy) no read/write backend is up: {listing}; read-only "
                f"backend{'s' if many else ''} {', '.join(ro_up)} {'are' if many else 'is'} up, "
                "but without a script only read/write backends get clients")

    def close_pools(self) -> None:
        """Close every idle pooled connection (at shutdown)."""
        for b in self.items:
            b.pool.close_all()

    def update(self, configured: list[BackendAddress], pool_limit: int,
               pool_max_age: float) -> None:
        """A reload's backend list, in its order: ``proxy.global.backends`` shows it to
        the next script call.

        A backend whose address stays keeps its object: its state, the state an operator
        set from the admin console, its counters and its idle pool (with the new pool
        limits); its index is its place in the new list. A removed backend leaves the
        list (index 0): clients on it finish their work on it, and its pool closes now
        (idle connections at once, the others when they would be pooled).
        """
        kept = {b.addr: b for b in self.items}
        items: list[Backend] = []
        for i, c in enumerate(configured):
            backend = kept.pop(c.address, None)
            if backend is None:
                backend = Backend(c, i + 1, pool_limit, pool_max_age)
                log.log(MESSAGE, "backend %s added as #%d (%s)", c.address, i + 1,
                        backend.type.name.lower())
            else:
                role = BackendType.RO if c.read_only else BackendType.RW
                if role != backend.type or backend.index != i + 1:
                    log.log(MESSAGE, "backend %s is now #%d (%s; was #%d, %s)", c.address, i + 1,
                            role.name.lower(), backend.index, backend.type.name.lower())
                backend._type = role
                backend.index = i + 1
                backend.pool.limit = pool_limit
                backend.pool.max_age = pool_max_age
            items.append(backend)
        for gone in kept.values():
            log.log(MESSAGE, "backend %s removed; %d client(s) on it finish there, its idle "
                    "connections are closed", gone.addr, gone.connected_clients)
            gone.index = 0
            gone.pool.close_all()
        self.items[:] = items

    def by_index(self, ndx: int) -> Backend | None:
        if 1 <= ndx <= len(self.items):
            return self.items[ndx - 1]
        return None

