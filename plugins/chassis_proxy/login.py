"""The login phase: the only caller of ``read_handshake``, ``read_auth`` and ``read_auth_result``.

Three ways in, one set of rules:

* :meth:`Login.relay`: a new server connection. The server's greeting goes to the client
  (capabilities the proxy cannot relay masked), the client's login goes to the server,
  and the auth exchange is relayed packet by packet until the server's OK or ERR. The
  proxy never knows a password, except for the caching_sha2 conversion below.
* :meth:`Login.pooled`: the server connection ``connect_server`` kept from the pool is
  logged in already; the client logs in on it by COM_CHANGE_USER (or, with
  ``--proxy-pool-no-change-user``, by matching the connection's first login).
* :meth:`Login.mock`: ``connect_server`` answered with a greeting of its own: the script
  plays the server (a mock server), there is no server connection.

Sequence ids are kept per leg: the client leg and the server leg can differ by one
when only one of them did an SSLRequest, so every forwarded login packet gets the next
id of the leg it goes to.

caching_sha2_password full authentication across legs of different security is
converted in memory for that one packet (see :mod:`chassis_proxy.sha2`).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import replace

from chassis_mysql.auth import new_challenge
from chassis_mysql.commands import ComChangeUser
from chassis_mysql.constants import Capability, ClientError, Command, ErrorCode
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import Packet
from chassis_mysql.handshake import (
    HandshakeResponse41,
    HandshakeV10,
    SSLRequest,
    is_protocol_320_response,
    version_number,
    with_classic_capabilities,
)
from chassis_mysql.login import PUBLIC_KEY_REQUEST, LoginEvent, LoginTracker
from chassis_mysql.packets import err_packet, is_ok, ok_packet

from chassis_proxy import capabilities, peer_identity, sha2, tls
from chassis_proxy.errors import ConnectionGone, LoginFailed, PoolError, err_text, tls_failure
from chassis_proxy.handover import Handover
from chassis_proxy.hooks import ConnectionHooks, Decision, Outcome, PeerInfo
from chassis_proxy.link import PROFILE_CAPABILITIES, ServerLink
from chassis_proxy.state import ConnectionState, peer_address

log = logging.getLogger("chassis.proxy")

#: Largest packet accepted during the login (a login packet is a few hundred bytes; this
#: stops a client that sends garbage from making us wait for megabytes).
LOGIN_MAX_PAYLOAD = 1 << 20

_PLUGIN_AUTH = int(Capability.PLUGIN_AUTH)  # an int: IntFlag's operators are slow


def scramble_buffer(hs: HandshakeV10) -> bytes:
    """``scramble_buffer`` as MySQL Proxy showed it: the challenge and its NUL."""
    return hs.auth_plugin_data + (b"\x00" if int(hs.capabilities) & _PLUGIN_AUTH else b"")


class Login:
    """One client's login, handed the connection's state, its hooks and its hand-over."""

    def __init__(self, state: ConnectionState, hooks: ConnectionHooks | None,
                 handover: Handover) -> None:
        self.state = state
        self.hooks = hooks
        self.handover = handover
        self.settings = state.settings
        #: The server leg's login, as the server sees it (what it sent, what it was sent).
        self.tracker = LoginTracker()
        #: Each read's --proxy-read-timeout; None when --proxy-login-timeout, which bounds
        #: the whole login, always ends first (a timer per read saved).
        login_timeout, read_timeout = self.settings.login_timeout, self.settings.read_timeout
        self.read_timeout = None if 0 < login_timeout <= read_timeout else read_timeout

    # a new server connection ---------------------------------------------------------

    async def relay(self, greeting: bytes) -> None:
        """Relay the login on the freshly connected server connection."""
        st = self.state
        server_ch, backend = st.server_ch, st.backend
        assert server_ch is not None and backend is not None
        tracker = self.tracker
        try:
            event = tracker.server_packet(greeting)
        except ProtocolError as e:
            st.fail_greeting(ErrorCode.HANDSHAKE_ERROR, f"(proxy) backend {backend.addr} sent "
                             f"a bad handshake: {e}", "08S01")
            raise ConnectionGone(f"backend {backend.addr} sent a bad handshake: {e}") from None
        if event == LoginEvent.ERR:
            st.client_ch.send(greeting, 0)
            raise ConnectionGone(f"backend {backend.addr} refused the connection: "
                                 f"{err_text(greeting)}")
        hs = tracker.handshake
        assert hs is not None
        st.server_handshake = hs
        st.scramble = hs.auth_plugin_data
        st.plugin = hs.auth_plugin_name
        st.server = PeerInfo(
            src=peer_address(server_ch.transport, "sockname") if server_ch.transport else None,
            dst=backend.address,
            mysqld_version=version_number(hs.server_version),
            thread_id=hs.connection_id,
            scramble_buffer=scramble_buffer(hs),
            auth_plugin_name=hs.auth_plugin_name,
        )
        st.link = ServerLink(server_ch, backend, st.server, hs, greeting, secure=st.server_secure)
        self._show_challenge(hs, st.server.mysqld_version)
        if self.hooks is not None:
            self._ask_read_handshake(self.hooks)
        backend_tls = self.settings.backend_tls
        if backend_tls.must(client_tls=False) and not int(hs.capabilities) & capabilities.SSL:
            message = f"backend {backend.addr} does not offer TLS, but --proxy-backend-ssl-mode=required"
            st.fail_greeting(ErrorCode.UNKNOWN_ERROR, f"(proxy) {message}", "HY000")
            raise ConnectionGone(message)

        st.cseq = st.client_ch.send(capabilities.offered(
            hs, greeting, self.hooks is not None, self.settings.client_tls.offered), 0)

        payload, login = await self.read_login()
        try:
            use_tls = tls.backend_leg(backend_tls, tls.is_tls(st.client_ch.transport),
                                      bool(int(hs.capabilities) & capabilities.SSL),
                                      str(backend.addr))
        except tls.LegRefused as e:  # server-range errnos: the CLI shows a CR_* one as garbage
            st.send_client_err(ErrorCode.UNKNOWN_ERROR, f"(proxy) {e}", "HY000")
            raise ConnectionGone(str(e)) from None

        # What goes to the server: the client's packet with our leg's TLS bit.
        server_caps = capabilities.to_server(int(login.capabilities), use_tls)
        to_server = with_classic_capabilities(payload, server_caps)
        replacement = None
        if self.hooks is not None:
            answered, replacement = self._ask_read_auth(self.hooks)
            if answered:  # the script logged the client in itself; nothing goes to the server
                self.handover.drop("the script answered the login itself")
                return
            to_server = replacement or to_server
        if use_tls:
            await self._backend_tls(login)
        sent = self._remember_login(replacement, login, server_caps)
        await peer_identity.refuse_proxy_identity(st, sent.username)
        st.sseq = server_ch.send(to_server, st.sseq)
        await self._auth_exchange()

    async def _backend_tls(self, login: HandshakeResponse41) -> None:
        """Switch the new server connection to TLS (SSLRequest, then the TLS handshake)."""
        st = self.state
        server_ch, backend, link, context = st.server_ch, st.backend, st.link, self.settings.backend_tls.context
        assert server_ch is not None and server_ch.transport is not None and backend is not None
        assert link is not None and context is not None
        request = SSLRequest(Capability(int(login.capabilities) | capabilities.SSL),
                             login.max_packet, login.charset)
        st.sseq = server_ch.send(request.encode(), st.sseq)
        try:
            server_ch.transport = await tls.upgrade(
                server_ch.transport, server_ch, context, server_side=False,
                timeout=self.settings.connect_timeout,
                server_hostname=tls.server_hostname(backend.address),
            )
        except (OSError, TimeoutError) as e:
            message = f"TLS handshake with backend {st.backend_name()} failed: {tls_failure(e)}"
            st.send_client_err(ErrorCode.UNKNOWN_ERROR, f"(proxy) {message}{tls.verify_hint(e)}", "HY000")
            raise ConnectionGone(message) from None
        st.server_secure = link.tls = True

    def _ask_read_handshake(self, hooks: ConnectionHooks) -> None:
        """``read_handshake``: a script that answers (``PROXY_SEND_RESULT``, or MySQL
        Proxy's deprecated alias ``PROXY_SEND_QUERY``) ends the login with its answer."""
        outcome = hooks.read_handshake()
        if outcome.decision == Decision.SEND_QUERY:
            log.warning("conn %d: read_handshake returned proxy.PROXY_SEND_QUERY, a deprecated "
                        "alias of PROXY_SEND_RESULT", self.state.connection_id)
        if outcome.decision in (Decision.SEND_RESULT, Decision.SEND_QUERY):
            self.state.send_response(outcome, 0)
            raise LoginFailed

    def _ask_read_auth(self, hooks: ConnectionHooks) -> tuple[bool, bytes | None]:
        """``read_auth``, the same rules for every kind of login: whether the script logged
        the client in itself (its OK was sent; its ERR ends the login), and the login
        packet it queued in place of the client's (``PROXY_SEND_QUERY``)."""
        st = self.state
        st.queries.reset()
        outcome = hooks.read_auth()
        if outcome.decision == Decision.SEND_RESULT and outcome.response:
            st.send_response(outcome, st.cseq)
            if is_ok(outcome.response[0]):
                return True, None
            raise LoginFailed
        replacement = None
        if outcome.decision == Decision.SEND_QUERY and len(st.queries):
            replacement = st.queries.pop().packet
        st.queries.reset()
        return False, replacement

    def _show_challenge(self, hs: HandshakeV10, mysqld_version: int) -> None:
        """``proxy.connection.client`` shows the challenge the client is about to get."""
        client = self.state.client
        client.mysqld_version = mysqld_version
        client.thread_id = hs.connection_id
        client.scramble_buffer = scramble_buffer(hs)
        client.auth_plugin_name = hs.auth_plugin_name

    async def read_login(self) -> tuple[bytes, HandshakeResponse41]:
        """The client's login packet (after TLS when it asks for it), parsed."""
        st = self.state
        client_ch = st.client_ch
        packet = await self._client_packet()
        payload = packet.payload
        st.cseq = (packet.seq + 1) & 0xFF
        client_tls = self.settings.client_tls
        if self._client_login_packet(payload) == LoginEvent.SSL_REQUEST:
            if client_tls.context is None:
                st.send_client_err(ErrorCode.HANDSHAKE_ERROR, "(proxy) TLS is not enabled on this proxy "
                                   "(start it with --proxy-ssl-cert and --proxy-ssl-key)", "08S01")
                raise ConnectionGone(f"client {st.name} asked for TLS, which is not configured")
            assert client_ch.transport is not None
            # Stop reading first: a ClientHello arriving between detach() and start_tls
            # taking over the transport would land in the packet reader and be lost.
            client_ch.transport.pause_reading()
            try:
                client_ch.transport = await tls.upgrade(
                    client_ch.transport, client_ch, client_tls.context, server_side=True,
                    leftover=client_ch.detach(), timeout=min(self.settings.read_timeout, 60.0),
                )
            except (OSError, TimeoutError) as e:
                raise ConnectionGone(f"TLS handshake with client {st.name} failed: "
                                     f"{tls_failure(e)}") from None
            st.client_secure = True
            packet = await self._client_packet()
            payload = packet.payload
            st.cseq = (packet.seq + 1) & 0xFF
            self._client_login_packet(payload)
        elif client_tls.required and not st.client_secure:  # a unix socket is secure
            st.send_client_err(ErrorCode.ACCESS_DENIED_ERROR, f"(proxy) {tls.NO_TLS_REFUSED}", "28000")
            log.info("conn %d: client %s refused: %s", st.connection_id, st.name, tls.NO_TLS_REFUSED)
            raise LoginFailed
        login = self.tracker.response
        assert login is not None
        st.client.username = login.username.decode("utf-8", "replace")
        st.client.scrambled_password = login.auth_response
        st.client.default_db = (login.database or b"").decode("utf-8", "replace")
        if login.auth_plugin_name:
            st.plugin = login.auth_plugin_name
            st.client.auth_plugin_name = login.auth_plugin_name
        st.client_capabilities = int(login.capabilities)
        st.client_charset = login.charset
        st.login_profile = (int(login.capabilities) & PROFILE_CAPABILITIES, login.charset)
        return payload, login

    def _client_login_packet(self, payload: bytes) -> LoginEvent:
        """The client's SSLRequest or login packet; anything else ends the login with ERR 1043
        (a pre-4.1 client gets MySQL Proxy's 2007, in the ERR format it can read)."""
        try:
            return self.tracker.client_packet(payload)
        except ProtocolError as e:
            if is_protocol_320_response(payload):
                self.state.client_ch.send(err_packet(ClientError.VERSION_ERROR, "4.0 protocol is not "
                                                     "supported", capabilities=0), self.state.cseq)
            else:
                self.state.send_client_err(ErrorCode.HANDSHAKE_ERROR, "Bad handshake", "08S01")
            raise ConnectionGone(f"bad handshake from client {self.state.name}: {e}") from None

    async def _auth_exchange(self) -> None:
        """Relay the server's auth packets and the client's answers until OK or ERR."""
        st = self.state
        client_ch, server_ch = st.client_ch, st.server_ch
        assert server_ch is not None
        tracker = self.tracker
        timeout = self.read_timeout
        while True:
            packet = await server_ch.read_packet(timeout)
            st.sseq = (packet.seq + 1) & 0xFF
            payload = packet.payload
            try:
                event = tracker.server_packet(payload)
            except ProtocolError as e:
                raise ConnectionGone(f"backend {st.backend_name()} broke the login: {e}") from None
            backend = st.backend  # read_auth_result may pool the connection
            if event == LoginEvent.OK:
                self._logged_in()  # before the hook, which may pool the connection
            if self.hooks is not None:
                outcome = self.hooks.read_auth_result(payload)
                if outcome.decision == Decision.SEND_RESULT and outcome.response:
                    st.send_response(outcome, st.cseq)
                    if is_ok(outcome.response[0]):
                        st.copy_login_to_server()
                        return
                    raise LoginFailed
            st.cseq = client_ch.send(payload, st.cseq)
            if event == LoginEvent.OK:
                st.copy_login_to_server()
                log.debug("conn %d: client %s logged in as %r via %s", st.connection_id,
                          st.name, st.client.username, backend.addr if backend else "?")
                return
            if event == LoginEvent.ERR:
                log.info("conn %d: login of %r from %s failed: %s", st.connection_id,
                         st.client.username, st.name, err_text(payload))
                raise LoginFailed
            if event == LoginEvent.AUTH_SWITCH:
                st.plugin = tracker.plugin
                st.scramble = tracker.scramble
            if event == LoginEvent.FULL_AUTH:
                await self._sha2_full_auth()
            elif event != LoginEvent.FAST_AUTH_OK:  # after 01 03 the server's OK follows
                await self._client_to_server()

    async def _client_packet(self) -> Packet:
        """The client's next login packet; framing garbage ends the login with ERR 1043."""
        st = self.state
        try:
            return await st.client_ch.read_packet(self.read_timeout)
        except ProtocolError as e:
            st.send_client_err(ErrorCode.HANDSHAKE_ERROR, "Bad handshake", "08S01")
            raise ConnectionGone(f"bad handshake from client {st.name}: {e}") from None

    async def _client_to_server(self) -> bytes:
        st = self.state
        assert st.server_ch is not None
        packet = await self._client_packet()
        st.cseq = (packet.seq + 1) & 0xFF
        self._to_server(packet.payload)
        return packet.payload

    def _to_server(self, payload: bytes) -> None:
        """An auth answer to the server, as the server's login tracker sees it."""
        st = self.state
        assert st.server_ch is not None
        self.tracker.client_packet(payload)
        st.sseq = st.server_ch.send(payload, st.sseq)

    async def _sha2_full_auth(self) -> None:
        """caching_sha2_password full authentication across legs of different security
        (the conversion itself is :mod:`chassis_proxy.sha2`'s)."""
        st = self.state
        if st.client_secure == st.server_secure:
            await self._client_to_server()  # both speak the same way: plain relay
            return
        packet = await self._client_packet()
        st.cseq = (packet.seq + 1) & 0xFF
        try:
            if st.client_secure:
                # Clear text from the client; the server wants it RSA-encrypted with its key.
                key = await self._server_public_key()
                self._to_server(sha2.encrypt_password(packet.payload, st.scramble, key))
            elif packet.payload != PUBLIC_KEY_REQUEST:
                # The client already had a public key (of the real server): cannot convert.
                self._to_server(packet.payload)
            else:  # plain client, secure server: the client asks for a key; it gets ours
                proxy_key = sha2.proxy_key()
                st.cseq = st.client_ch.send(b"\x01" + proxy_key.public_pem, st.cseq)
                packet = await self._client_packet()
                st.cseq = (packet.seq + 1) & 0xFF
                self._to_server(proxy_key.decrypt_password(packet.payload, st.scramble))
        except sha2.Sha2Error as e:
            st.send_client_err(ErrorCode.UNKNOWN_ERROR, f"(proxy) {e}", "HY000")
            raise ConnectionGone(f"caching_sha2_password full authentication: {e}") from None

    async def _server_public_key(self) -> bytes:
        """Ask the server for its RSA key; anything else (an ERR) ends the login."""
        st = self.state
        assert st.server_ch is not None
        self._to_server(PUBLIC_KEY_REQUEST)
        packet = await st.server_ch.read_packet(self.read_timeout)
        st.sseq = (packet.seq + 1) & 0xFF
        try:
            event = self.tracker.server_packet(packet.payload)
        except ProtocolError as e:
            raise ConnectionGone(f"backend {st.backend_name()} broke the login: {e}") from None
        if event != LoginEvent.PUBLIC_KEY:
            st.cseq = st.client_ch.send(packet.payload, st.cseq)
            raise LoginFailed
        return packet.payload[1:]

    def _remember_login(self, replacement: bytes | None, login: HandshakeResponse41,
                        sent_caps: int) -> HandshakeResponse41:
        """What the server connection is logged in with (the pool matches on it): the
        client's login sent with ``sent_caps``, or the packet a script put in its place."""
        if replacement:
            try:
                login = HandshakeResponse41.parse(replacement)
                sent_caps = int(login.capabilities)
            except ProtocolError:
                pass
        link = self.state.link
        if link is None:
            return login
        link.username = login.username.decode("utf-8", "replace")
        link.login_response = login.auth_response
        link.capabilities = sent_caps
        link.charset = login.charset
        return login

    def _logged_in(self) -> None:
        """The server accepted the login: from now on the connection may be pooled."""
        st = self.state
        st.copy_login_to_server()
        link = st.link
        if link is not None and link.channel is st.server_ch:
            link.authenticated = True
            link.secure = st.server_secure
            link.last_client = st.connection_id
            st.pool_user = link.username

    # a pooled server connection --------------------------------------------------------

    async def pooled(self) -> None:
        """A new client logs in on the pooled connection connect_server kept.

        The server connection is logged in already. By default the client's login is
        sent as COM_CHANGE_USER: the server checks the password (its new challenge
        reaches the client as an auth switch) and resets the session. The client is
        shown a fresh random challenge, never the one the connection's first client
        answered. With --proxy-pool-no-change-user the client gets that original
        challenge instead and must send what the first login sent (same user, same
        password); the session is then reset with COM_RESET_CONNECTION.
        """
        st = self.state
        link = st.link
        hooks = self.hooks
        assert link is not None and hooks is not None
        no_change_user = self.settings.pool_no_change_user
        hs = link.handshake
        if not no_change_user:
            hs = replace(hs, auth_plugin_data=new_challenge(len(hs.auth_plugin_data)))
        st.server_handshake = hs
        st.scramble = hs.auth_plugin_data
        st.plugin = hs.auth_plugin_name
        link.peer.scramble_buffer = scramble_buffer(hs)
        self._show_challenge(hs, link.peer.mysqld_version)
        touched = False
        try:
            self._ask_read_handshake(hooks)
            offered = capabilities.offered(hs, None, True, self.settings.client_tls.offered)
            self.tracker.server_packet(offered)  # the client's side of the login, this time
            st.cseq = st.client_ch.send(offered, 0)
            _payload, login = await self.read_login()
            mismatch = tls.pooled_mismatch(self.settings.backend_tls, st.client_ch.transport, link)
            if mismatch:  # handover.choose never takes such a connection: the last guard
                st.send_client_err(ErrorCode.UNKNOWN_ERROR, f"(proxy-pool) {mismatch}", "HY000")
                raise ConnectionGone(mismatch)
            answered, replacement = self._ask_read_auth(hooks)
            if answered:
                self.handover.unchoose()  # the script logged the client in: no server needed
                st.backend_index = 0
                return
            if replacement is not None:
                try:
                    login = HandshakeResponse41.parse(replacement)
                except ProtocolError as e:
                    log.critical("conn %d: read_auth queued a login packet that does not parse "
                                 "(%s); the client's own is used", st.connection_id, e)
            await peer_identity.refuse_proxy_identity(st, login.username)
            if no_change_user:
                self._check_first_login(login)
                touched = True
                await self._reset_for_login()
            else:
                touched = True
                await self._change_user(login)
        except BaseException:
            if not touched:
                self.handover.unchoose()  # nothing was sent on it: back to the pool as it was
            raise
        link.last_client = st.connection_id

    async def _change_user(self, login: HandshakeResponse41) -> None:
        st = self.state
        link, ch = st.link, st.server_ch
        assert link is not None and ch is not None
        command = ComChangeUser(
            username=login.username,
            auth_response=login.auth_response,
            database=login.database or b"",
            charset=login.charset,
            auth_plugin_name=login.auth_plugin_name or st.plugin,
            connect_attrs=login.connect_attrs,
        )
        try:
            packet = command.encode(link.capabilities)
        except ProtocolError as e:
            st.send_client_err(ErrorCode.HANDSHAKE_ERROR, f"(proxy-pool) {e}", "08S01")
            raise ConnectionGone(f"cannot log client {st.name} in on a pooled connection: "
                                 f"{e}") from None
        link.authenticated = False  # until the server accepts the new login
        link.username = login.username.decode("utf-8", "replace")
        link.charset = login.charset
        link.reset_pending = False  # COM_CHANGE_USER resets the session
        self.tracker = LoginTracker(change_user_plugin=command.auth_plugin_name or "",
                                    scramble=st.scramble)
        st.sseq = ch.send(packet, 0)
        log.debug("conn %d: client %s logs in as %r on %s (COM_CHANGE_USER)",
                  st.connection_id, st.name, link.username, link.name)
        await self._auth_exchange()
        if st.link is link:
            self.handover.check_ready(link)  # its multi-statement setting may not be the client's

    def _check_first_login(self, login: HandshakeResponse41) -> None:
        """--proxy-pool-no-change-user: the same user and password as the first login."""
        st = self.state
        link = st.link
        assert link is not None
        user = login.username.decode("utf-8", "replace")
        same_user = hmac.compare_digest(user.encode(), link.username.encode())
        same_answer = hmac.compare_digest(login.auth_response, link.login_response)
        if same_user and same_answer:
            return
        log.info("conn %d: login of %r from %s on the pooled connection %s failed: not the "
                 "user and password of its first login (--proxy-pool-no-change-user)",
                 st.connection_id, user, st.name, link.name)
        st.send_client_err(ErrorCode.ACCESS_DENIED_ERROR, "(proxy-pool) login failed", "28000")
        raise LoginFailed

    async def _reset_for_login(self) -> None:
        """--proxy-pool-no-change-user: reset the session, select the client's database,
        then answer the login as the server would have."""
        st = self.state
        link, ch = st.link, st.server_ch
        assert link is not None and ch is not None and self.hooks is not None
        link.reset_pending = True
        try:
            await self.handover.prepare()
        except PoolError as e:
            st.send_client_err(ErrorCode.UNKNOWN_ERROR, f"(proxy-pool) {e}", "HY000")
            raise ConnectionGone(str(e)) from None
        db = st.client.default_db
        if db and db != link.peer.default_db:
            link.busy = True
            try:
                reply = await self.handover.server_command(
                    bytes((Command.INIT_DB,)) + db.encode("utf-8", "surrogateescape"))
            finally:
                link.busy = False
            if not is_ok(reply):
                st.cseq = st.client_ch.send(reply, st.cseq)  # e.g. unknown database
                raise LoginFailed
            link.peer.default_db = db
        ok = ok_packet(status=st.server_handshake.status if st.server_handshake else 2,
                       capabilities=st.client_capabilities)
        self._logged_in()
        outcome = self.hooks.read_auth_result(ok)
        if outcome.decision == Decision.SEND_RESULT and outcome.response:
            st.send_response(outcome, st.cseq)
            if not is_ok(outcome.response[0]):
                raise LoginFailed
            return
        st.cseq = st.client_ch.send(ok, st.cseq)

    # no server connection: the script is the server ---------------------------------

    def mock_greeting(self, outcome: Outcome) -> None:
        """connect_server answered itself: remember a handshake it sent as our challenge."""
        st = self.state
        packets = outcome.response or []
        hs = None
        if packets:
            try:
                if self.tracker.server_packet(packets[0]) == LoginEvent.GREETING:
                    hs = self.tracker.handshake
            except ProtocolError:
                pass
            if hs is not None:
                st.server_handshake = hs
                st.scramble = hs.auth_plugin_data
                st.client.scramble_buffer = hs.auth_plugin_data + b"\x00"
                st.client.mysqld_version = version_number(hs.server_version)
                st.client.thread_id = hs.connection_id
        st.send_response(outcome, 0)

    async def mock(self) -> bool:
        """The login with a mock server: ``read_auth`` answers it (an OK when it does not);
        whether the client is logged in (the command phase follows)."""
        st = self.state
        hooks = self.hooks
        if st.server_handshake is None or hooks is None:
            return False  # the script sent something other than a handshake (an ERR): done
        await self.read_login()
        answered, _replacement = self._ask_read_auth(hooks)  # no server: nothing to replace
        if not answered:
            st.cseq = st.client_ch.send(ok_packet(), st.cseq)
        return True
