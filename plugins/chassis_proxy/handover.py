"""What ``proxy.connection.backend_ndx`` means: a server connection changing hands.

MySQL Proxy 0.8's pool (reference section 7.5), driven by scripts. In
``connect_server``, ``backend_ndx = n`` says where to connect, or keeps an idle pooled
connection (of any user's with more than ``min_idle_connections`` idle) for
``PROXY_IGNORE_RESULT``. After the login, ``0`` parks the client's server connection in
its backend's pool and ``N`` takes an idle connection of backend N logged in as this
client's user. A connection that another client had is prepared (reset, multi-statement
setting) before this client's next command: :meth:`Handover.prepare`.

:class:`Handover` is handed the connection's plain state and two callbacks; the pool
itself lives in :mod:`chassis_proxy.pool`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from chassis_mysql.constants import Capability, Command, SetOption
from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import is_err, is_ok

from chassis_proxy import proxy_header, tls
from chassis_proxy.backends import Backends
from chassis_proxy.channel import ChannelClosed, ChannelTimeout, PacketChannel
from chassis_proxy.errors import PoolError, err_text
from chassis_proxy.hooks import BackendState
from chassis_proxy.link import ServerLink
from chassis_proxy.state import ConnectionState, ignore

log = logging.getLogger("chassis.proxy")

_MULTI_STATEMENTS = int(Capability.MULTI_STATEMENTS)


class Handover:
    """Attach, detach, park, switch and prepare the server connection of one client.

    ``fold_counters`` books the bytes so far to the backend being left;
    ``on_lost`` is the connection's callback for a server channel that closes while
    attached. ``at_rest`` says whether the command loop owes nothing on the server
    connection (set by the command loop when it starts).
    """

    def __init__(self, state: ConnectionState, backends: Backends,
                 fold_counters: Callable[[], None],
                 on_lost: Callable[[PacketChannel, BaseException | None], None]) -> None:
        self.state = state
        self.backends = backends
        self.fold_counters = fold_counters
        self.on_lost = on_lost
        self.at_rest: Callable[[], bool] = _always
        self.choosing = False  # connect_server is running
        state.on_backend_ndx = self.set_backend_ndx

    def release(self) -> None:
        """The connection closed: drop the callbacks into it and its command loop (no
        cycles left, so reference counting frees them at once)."""
        self.state.on_backend_ndx = self.fold_counters = ignore
        self.on_lost = ignore
        self.at_rest = _always

    def set_backend_ndx(self, n: int) -> None:
        """``backend_ndx = n`` from a script: its meaning depends on the phase."""
        if self.choosing:
            self.choose(n)
        elif n == 0:
            self.park()
        else:
            self.switch(n)

    # attaching and detaching -----------------------------------------------------------

    def attach(self, link: ServerLink) -> None:
        """Make ``link`` this client's server connection."""
        st = self.state
        self.fold_counters()  # what came before belongs to no backend
        st.link = link
        st.server_ch = link.channel
        st.server = link.peer
        st.backend = link.backend
        st.backend_index = link.backend.index
        st.server_secure = link.secure
        link.channel.on_lost = self.on_lost
        link.backend.connected_clients += 1
        st.counted = True
        self.check_ready(link)
        if st.in_commands:
            link.channel.reader.max_payload = None

    def detach(self) -> ServerLink | None:
        """Take the server connection away from this client; it stays open."""
        st = self.state
        link = st.link
        if link is None:
            return None
        self.fold_counters()  # the bytes so far belong to this backend
        self.uncount()
        link.channel.on_lost = None
        st.link = None
        st.server_ch = None
        st.server = None
        st.backend = None
        st.backend_index = 0
        return link

    def uncount(self) -> None:
        """The client no longer counts in its backend's ``connected_clients``."""
        st = self.state
        if st.counted and st.backend is not None:
            st.backend.connected_clients -= 1
            st.counted = False

    def drop(self, reason: str) -> None:
        """Close the server connection and go on without one (``proxy.connection.server`` nil)."""
        st = self.state
        if st.server_ch is not None:
            log.debug("conn %d: closing the server connection: %s", st.connection_id, reason)
            st.server_ch.on_lost = None
            st.server_ch.close()
            st.server_ch = None
        st.server = None
        st.link = None
        self.uncount()

    def is_at_rest(self) -> bool:
        """Whether the server connection is logged in and owes no response (only then
        may it change hands)."""
        link = self.state.link
        if link is None or not link.authenticated or link.busy or link.channel.closed:
            return False
        return self.at_rest()

    def check_ready(self, link: ServerLink) -> None:
        """Whether ``link`` must be prepared before this client's next command on it."""
        link.unready = link.reset_pending or bool(
            (link.capabilities ^ self.state.client_capabilities) & _MULTI_STATEMENTS)

    # what backend_ndx = n does ------------------------------------------------------------

    def park(self) -> None:
        """``backend_ndx = 0``: the server connection goes to its backend's pool."""
        st = self.state
        link = st.link
        if link is None:
            st.backend_index = 0
            return
        if not self.is_at_rest():
            why = ("its login is not finished" if not link.authenticated
                   else "a command on it is not finished")
            # At disconnect the connection is closed anyway: no need to shout.
            log.log(logging.DEBUG if st.closed else logging.WARNING,
                    "conn %d: backend_ndx = 0 ignored: the server connection %s cannot be "
                    "pooled, %s", st.connection_id, link.name, why)
            return
        self.detach()
        link.origin = proxy_header.origin(st.settings, st.client)
        pool = link.backend.pool
        if pool.park(link):
            log.debug("conn %d: pooled the server connection %s (user %r; %d idle there)",
                      st.connection_id, link.name, link.username, pool.idle_count)

    def choose(self, n: int) -> None:
        """``backend_ndx = n`` in connect_server: where to connect, or an idle connection
        to keep (any user's with more than min_idle_connections idle: the user is not
        known yet)."""
        self.unchoose()
        self.state.backend_index = n
        backend = self.backends.by_index(n)
        if backend is None or backend.state in (BackendState.DOWN, BackendState.OFFLINE):
            return
        st = self.state
        may_take, leg_tls = tls.pool_filter(st.settings.backend_tls, st.settings.client_tls, None,
                                            unix_client=st.client_secure)
        if not may_take:
            log.debug("conn %d: backend_ndx = %d keeps no pooled connection: whether this "
                      "client's leg will be TLS is not known yet (--proxy-backend-ssl-mode="
                      "as_client)", st.connection_id, n)
            return
        link = backend.pool.take("", st.connection_id, None, any_user=True, tls=leg_tls,
                                 origin=proxy_header.origin(st.settings, st.client))
        if link is not None:
            self.attach(link)

    def unchoose(self) -> None:
        """An idle connection taken in connect_server but not used goes back, untouched."""
        st = self.state
        link = st.link
        if link is not None and link.authenticated and not link.busy:
            ndx = st.backend_index
            self.detach()
            link.backend.pool.park(link)
            st.backend_index = ndx

    def switch(self, n: int) -> None:
        """``backend_ndx = N`` after the login: take an idle connection of backend N."""
        st = self.state
        link = st.link
        if link is not None and link.backend.index == n:
            return
        if link is not None and not self.is_at_rest():
            why = ("the login is not finished" if not link.authenticated
                   else "a command is not finished")
            log.warning("conn %d: backend_ndx = %d ignored: %s", st.connection_id, n, why)
            return
        if not st.pool_user:
            log.warning("conn %d: backend_ndx = %d ignored: no server accepted this client's "
                        "login yet", st.connection_id, n)
            return
        backend = self.backends.by_index(n)
        if backend is None or backend.state in (BackendState.DOWN, BackendState.OFFLINE):
            log.debug("conn %d: backend_ndx = %d ignored: the backend is down or offline",
                      st.connection_id, n)
            return
        _, leg_tls = tls.pool_filter(st.settings.backend_tls, st.settings.client_tls,
                                     tls.is_tls(st.client_ch.transport))
        taken = backend.pool.take(st.pool_user, st.connection_id, st.login_profile,
                                  any_user=False, tls=leg_tls,
                                  origin=proxy_header.origin(st.settings, st.client))
        if taken is None:
            # A new connection cannot log in for this client: the proxy never learns its
            # password, and every server sends its own challenge.
            log.debug("conn %d: backend_ndx = %d: no idle connection of user %r on %s; %s",
                      st.connection_id, n, st.pool_user, backend.addr,
                      f"staying on {link.name}" if link is not None else "no server connection")
            return
        self.park()
        if taken.last_client != st.connection_id:
            taken.reset_pending = True  # another client's: reset before its first command
        taken.last_client = st.connection_id
        self.attach(taken)
        log.debug("conn %d: now on %s%s", st.connection_id, taken.name,
                  " (to be reset)" if taken.reset_pending else "")

    # preparing a connection that changed hands -------------------------------------------

    async def prepare(self) -> None:
        """Make a pooled connection this client's before its next command.

        COM_RESET_CONNECTION when another client had it: that client's transaction,
        temporary tables, user variables, locks and prepared statements go. The default
        database stays (the server keeps it), and so does ``server.default_db``. Then
        COM_SET_OPTION when the connection's multi-statement setting is not what this
        client logged in with (the only login capability that can change later).
        """
        st = self.state
        link = st.link
        assert link is not None and st.server_ch is not None
        link.busy = True
        try:
            if link.reset_pending:
                reply = await self.server_command(bytes((Command.RESET_CONNECTION,)))
                if not is_ok(reply):
                    raise PoolError(f"the server refused to reset the pooled connection "
                                    f"{link.name}: {err_text(reply)}")
                link.reset_pending = False
                log.debug("conn %d: reset %s", st.connection_id, link.name)
            wanted = st.client_capabilities & _MULTI_STATEMENTS
            if link.capabilities & _MULTI_STATEMENTS != wanted:
                option = SetOption.MULTI_STATEMENTS_ON if wanted else SetOption.MULTI_STATEMENTS_OFF
                reply = await self.server_command(
                    bytes((Command.SET_OPTION,)) + int(option).to_bytes(2, "little"))
                if is_err(reply):
                    raise PoolError(f"the server refused to switch multi-statements on the "
                                    f"pooled connection {link.name}: {err_text(reply)}")
                link.capabilities ^= _MULTI_STATEMENTS
        except (ChannelClosed, ChannelTimeout, ProtocolError) as e:
            raise PoolError(f"preparing the pooled connection {link.name} failed: "
                            f"{e or type(e).__name__}") from None
        finally:
            link.busy = False
        link.unready = False

    async def server_command(self, payload: bytes) -> bytes:
        """One command of the proxy's own whose answer is one packet (OK, EOF or ERR)."""
        ch = self.state.server_ch
        assert ch is not None
        ch.send(payload, 0)
        return (await ch.read_packet(self.state.settings.read_timeout)).payload


def _always() -> bool:
    return True
