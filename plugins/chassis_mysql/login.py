"""Which packet of the connection phase (the login) is which, and when the login is over.

A :class:`LoginTracker` is the login's counterpart of
:class:`~chassis_mysql.response.ResponseTracker`, after h11's model: feed it the logical
payloads of both sides in the order they travel (:meth:`~LoginTracker.server_packet`,
:meth:`~LoginTracker.client_packet`; framing and sequence ids stay with the caller), and
each call says what the packet is (a :class:`LoginEvent`) and keeps what the rest of
the login needs (the handshake, the client's response, the auth plugin and challenge in
effect). :attr:`~LoginTracker.expects` names the side whose packet comes next.

It does not care who feeds it: a relay feeds what passes through, a server (the admin
plugin) feeds its own greeting and auth switches as "server" packets and what its
client sends as "client" packets. Anything out of turn or malformed raises
:class:`~chassis_mysql.errors.ProtocolError` saying what arrived and what was expected.

The exchanges it follows: the greeting (or an ERR in its place: host blocked, too many
connections), an optional SSLRequest (TLS is then started outside, and the client's
HandshakeResponse41 follows on the encrypted stream), the response, then any number of
auth switches (ed25519, native password after caching_sha2, ...) and plugin rounds
(``0x01`` + data, each answered by the client), caching_sha2_password's fast path
(``01 03`` then OK, the client silent) and full path (``01 04``; the client sends its
password in clear over a secure leg, or ``02`` to ask for the server's RSA key, which
comes back as ``01`` + PEM and is answered with the encrypted password), until OK or ERR.
A :class:`LoginTracker` made with ``change_user_plugin`` starts after a COM_CHANGE_USER:
the server's answer comes first.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

from chassis_mysql.constants import AUTH_MORE_DATA_HEADER, AUTH_SWITCH_HEADER, OK_HEADER
from chassis_mysql.errors import ProtocolError
from chassis_mysql.handshake import (
    AuthMoreData,
    AuthSwitchRequest,
    HandshakeResponse41,
    HandshakeV10,
    is_ssl_request,
)
from chassis_mysql.packets import ERR, is_err

#: The plugin whose ``01 03`` / ``01 04`` / ``02`` packets mean fast and full authentication.
CACHING_SHA2_PASSWORD = "caching_sha2_password"
#: What the one-byte AuthSwitchRequest (``0xFE`` alone, pre-4.1) switches to.
OLD_PASSWORD = "mysql_old_password"
#: caching_sha2_password's client packet asking for the server's RSA public key.
PUBLIC_KEY_REQUEST = b"\x02"

Side = Literal["server", "client"]


class LoginEvent(IntEnum):
    """What one packet of the connection phase is. The comment says who sends it."""

    GREETING = 1  # server: a HandshakeV10
    SSL_REQUEST = 2  # client: SSLRequest; TLS starts, then the client's HandshakeResponse41
    RESPONSE = 3  # client: HandshakeResponse41
    AUTH_SWITCH = 4  # server: AuthSwitchRequest (0xFE)
    AUTH_MORE_DATA = 5  # server: 0x01 + plugin data; the client answers
    FAST_AUTH_OK = 6  # server, caching_sha2_password: 01 03; the OK follows, client silent
    FULL_AUTH = 7  # server, caching_sha2_password: 01 04; the client sends its password or 02
    PUBLIC_KEY_REQUEST = 8  # client, after FULL_AUTH: 02
    PUBLIC_KEY = 9  # server, after PUBLIC_KEY_REQUEST: 01 + PEM
    AUTH_DATA = 10  # client: an auth answer
    OK = 11  # server: logged in
    ERR = 12  # server: refused


# States: what the next packet may be. Plain ints, as in response.py.
_GREETING = 0  # server: the greeting (or ERR)
_RESPONSE = 1  # client: SSLRequest or HandshakeResponse41
_RESPONSE_AFTER_TLS = 2  # client: HandshakeResponse41 (TLS was asked for)
_AUTH = 3  # server: OK, ERR, auth switch, more data
_ANSWER = 4  # client: an auth answer
_FULL_AUTH_ANSWER = 5  # client: password, encrypted password, or 02
_PUBLIC_KEY = 6  # server: 01 + PEM (or OK, ERR, ...)
_DONE = 7

_SERVER_STATES = frozenset({_GREETING, _AUTH, _PUBLIC_KEY})
_WANTED = {
    _GREETING: "the server's greeting (HandshakeV10 or ERR)",
    _RESPONSE: "the client's HandshakeResponse41 or SSLRequest",
    _RESPONSE_AFTER_TLS: "the client's HandshakeResponse41 (after its SSLRequest and TLS)",
    _AUTH: "the server's OK, ERR, auth switch (0xfe) or more auth data (0x01)",
    _ANSWER: "the client's auth answer",
    _FULL_AUTH_ANSWER: "the client's password or public key request (02) for full authentication",
    _PUBLIC_KEY: "the server's RSA public key (0x01 + PEM), OK or ERR",
}


class LoginTracker:
    """Follows one login, fed the payloads of both sides (see the module docstring).

    ``change_user_plugin``: COM_CHANGE_USER naming this auth plugin was just sent, so
    the server's answer comes first. ``scramble`` is then the challenge in effect (the
    connection's, from its greeting), which an auth switch replaces.
    """

    __slots__ = (
        "_state",
        "error",
        "expects_tls",
        "handshake",
        "plugin",
        "public_key",
        "response",
        "scramble",
        "succeeded",
    )

    def __init__(self, *, change_user_plugin: str | None = None, scramble: bytes = b"") -> None:
        #: Auth plugin in effect: the greeting's, the client's choice, then any switch's.
        self.plugin = change_user_plugin or ""
        #: Challenge in effect: the greeting's auth_plugin_data, or the last auth switch's.
        self.scramble = scramble
        self.handshake: HandshakeV10 | None = None
        self.response: HandshakeResponse41 | None = None
        #: The server's RSA public key (PEM) once it sent it (caching_sha2 full path).
        self.public_key: bytes | None = None
        #: The server's ERR when the login failed.
        self.error: ERR | None = None
        self.succeeded = False
        #: True after an SSLRequest until the client's HandshakeResponse41: the TLS
        #: handshake happens now, outside the tracker.
        self.expects_tls = False
        self._state = _GREETING if change_user_plugin is None else _AUTH

    def __repr__(self) -> str:
        return f"<LoginTracker expects={self.expects} plugin={self.plugin!r}>"

    @property
    def done(self) -> bool:
        """True after the server's OK or ERR."""
        return self._state == _DONE

    @property
    def expects(self) -> Side | None:
        """Whose packet comes next: ``"server"``, ``"client"``, or None once done."""
        state = self._state
        if state == _DONE:
            return None
        return "server" if state in _SERVER_STATES else "client"

    # -- the server's packets -------------------------------------------------------

    def server_packet(self, payload: bytes) -> LoginEvent:
        """Classify the server's next login packet and advance."""
        state = self._state
        if state not in _SERVER_STATES:
            raise self._out_of_turn("server", payload)
        if not payload:
            raise ProtocolError(f"login: the server sent an empty packet where {_WANTED[state]} "
                                "was expected")
        if is_err(payload):
            return self._err(payload)
        if state == _GREETING:
            return self._greeting(payload)
        first = payload[0]
        if first == OK_HEADER:
            self._state = _DONE
            self.succeeded = True
            return LoginEvent.OK
        if first == AUTH_SWITCH_HEADER:
            try:
                switch = AuthSwitchRequest.parse(payload)
            except ProtocolError as e:
                raise ProtocolError(f"login: the server sent a malformed auth switch: {e}") from None
            if switch.plugin_name is None:
                self.plugin = OLD_PASSWORD  # with the greeting's scramble
            else:
                self.plugin = switch.plugin_name
                self.scramble = switch.scramble
            self._state = _ANSWER
            return LoginEvent.AUTH_SWITCH
        if first == AUTH_MORE_DATA_HEADER:
            return self._more_data(AuthMoreData.parse(payload).data, state)
        raise ProtocolError(f"login: the server sent a packet starting 0x{first:02x} where "
                            f"{_WANTED[state]} was expected")

    def _err(self, payload: bytes) -> LoginEvent:
        try:
            self.error = ERR.parse(payload)
        except ProtocolError as e:
            raise ProtocolError(f"login: the server sent a malformed ERR: {e}") from None
        self._state = _DONE
        return LoginEvent.ERR

    def _greeting(self, payload: bytes) -> LoginEvent:
        try:
            hs = HandshakeV10.parse(payload)
        except ProtocolError as e:
            raise ProtocolError(f"login: the server's greeting is not a valid HandshakeV10: {e}"
                                ) from None
        self.handshake = hs
        self.plugin = hs.auth_plugin_name
        self.scramble = hs.auth_plugin_data
        self._state = _RESPONSE
        return LoginEvent.GREETING

    def _more_data(self, data: bytes, state: int) -> LoginEvent:
        if state == _PUBLIC_KEY:
            self.public_key = data
            self._state = _ANSWER
            return LoginEvent.PUBLIC_KEY
        if self.plugin == CACHING_SHA2_PASSWORD:
            if data == AuthMoreData.FAST_AUTH_SUCCESS:
                return LoginEvent.FAST_AUTH_OK  # still _AUTH: the server's OK follows
            if data == AuthMoreData.PERFORM_FULL_AUTHENTICATION:
                self._state = _FULL_AUTH_ANSWER
                return LoginEvent.FULL_AUTH
        self._state = _ANSWER
        return LoginEvent.AUTH_MORE_DATA

    # -- the client's packets -------------------------------------------------------

    def client_packet(self, payload: bytes) -> LoginEvent:
        """Classify the client's next login packet and advance."""
        state = self._state
        if state == _DONE or state in _SERVER_STATES:
            raise self._out_of_turn("client", payload)
        if state == _ANSWER:
            self._state = _AUTH
            return LoginEvent.AUTH_DATA
        if state == _FULL_AUTH_ANSWER:
            if payload == PUBLIC_KEY_REQUEST:
                self._state = _PUBLIC_KEY
                return LoginEvent.PUBLIC_KEY_REQUEST
            self._state = _AUTH
            return LoginEvent.AUTH_DATA
        if state == _RESPONSE and is_ssl_request(payload):
            self._state = _RESPONSE_AFTER_TLS
            self.expects_tls = True
            return LoginEvent.SSL_REQUEST
        try:
            response = HandshakeResponse41.parse(payload)
        except ProtocolError as e:
            raise ProtocolError(f"login: the client's {len(payload)}-byte packet is not a valid "
                                f"HandshakeResponse41: {e}") from None
        self.response = response
        self.expects_tls = False
        if response.auth_plugin_name:
            self.plugin = response.auth_plugin_name
        self._state = _AUTH
        return LoginEvent.RESPONSE

    def _out_of_turn(self, side: Side, payload: bytes) -> ProtocolError:
        what = f"a {len(payload)}-byte packet"
        if payload:
            what += f" starting 0x{payload[0]:02x}"
        if self._state == _DONE:
            return ProtocolError(f"login: the {side} sent {what} after the login ended "
                                 f"({'OK' if self.succeeded else 'ERR'})")
        return ProtocolError(f"login: the {side} sent {what} where {_WANTED[self._state]} "
                             "was expected")
