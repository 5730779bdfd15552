"""A tiny MySQL server that authenticates with caching_sha2_password, for tests only.

MariaDB (our test backend) has no caching_sha2_password, yet the proxy must relay it:
the fast path, and full authentication both over TLS (cleartext password) and over plain
TCP (the client asks for the server's RSA key and sends the password encrypted). This
server does exactly that much, like MySQL 8 does, and then answers a few queries
(``SELECT 1``, ``SELECT CURRENT_USER()``, ``SHOW STATUS LIKE 'Ssl_cipher'``...) with tiny
text result sets, so a real client can log in, prove who it is, and quit.

Its :attr:`Sha2Server.auth_log` records which path every login took, so a test through
the proxy can assert that the path it meant to exercise was the one taken.

The protocol bits are written by hand on purpose: this is the independent party the
proxy's codec is tested against, so it must not share that codec's mistakes.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import os
import re
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.support.certs import TLSCerts

SERVER_VERSION = "8.0.36-chassis-sha2-test"
PLUGIN = "caching_sha2_password"
DEFAULT_USERS: Mapping[str, str] = {"sha2": "sha2_pw", "sha2_empty": ""}

# Capability flags (protocol docs, "Capabilities Flags").
CLIENT_LONG_PASSWORD = 1
CLIENT_FOUND_ROWS = 1 << 1
CLIENT_LONG_FLAG = 1 << 2
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_LOCAL_FILES = 1 << 7
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_INTERACTIVE = 1 << 10
CLIENT_SSL = 1 << 11
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_CONNECT_ATTRS = 1 << 20
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21

# No DEPRECATE_EOF, SESSION_TRACK or COMPRESS: result sets end with plain EOF packets,
# which every client still understands, and the server stays small.
SERVER_CAPABILITIES = (
    CLIENT_LONG_PASSWORD | CLIENT_FOUND_ROWS | CLIENT_LONG_FLAG | CLIENT_CONNECT_WITH_DB
    | CLIENT_LOCAL_FILES | CLIENT_PROTOCOL_41 | CLIENT_INTERACTIVE | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION | CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
)

SERVER_STATUS_AUTOCOMMIT = 0x0002
CHARSET_UTF8MB4_0900 = 255
CHARSET_BINARY = 63

COM_QUIT = 0x01
COM_INIT_DB = 0x02
COM_QUERY = 0x03
COM_PING = 0x0E
COM_RESET_CONNECTION = 0x1F

# caching_sha2_password's AuthMoreData bytes.
REQUEST_PUBLIC_KEY = 0x02
FAST_AUTH_SUCCESS = 0x03
PERFORM_FULL_AUTHENTICATION = 0x04

MYSQL_TYPE_LONGLONG = 0x08
MYSQL_TYPE_VAR_STRING = 0xFD

ER_ACCESS_DENIED = 1045
ER_UNKNOWN_COM = 1047
ER_PARSE = 1064
ER_HANDSHAKE = 1043


class ClientGone(Exception):
    """The client closed the connection (between or inside packets)."""


class ProtocolViolation(Exception):
    """The client sent something this server cannot make sense of."""


@dataclass(frozen=True)
class AuthEvent:
    """How one login went. ``path`` is ``fast``, ``full-tls``, ``full-rsa``, ``empty``
    (the account has no password), ``full-plain`` (a cleartext password over plain TCP,
    always refused) or ``refused`` (unknown user, or a scramble that is not 32 bytes);
    ``switched`` if the client started with another plugin and got an
    AuthSwitchRequest."""

    user: str
    path: str
    ok: bool
    tls: bool
    switched: bool


# -- wire helpers ------------------------------------------------------------------------

def lenenc_int(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    return b"\xfe" + n.to_bytes(8, "little")


def lenenc_str(b: bytes) -> bytes:
    return lenenc_int(len(b)) + b


def read_lenenc_int(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise ProtocolViolation("length-encoded integer past the end of the packet")
    first = buf[pos]
    width = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first, 0)
    if width == 0:
        return first, pos + 1
    if pos + 1 + width > len(buf):
        raise ProtocolViolation("length-encoded integer past the end of the packet")
    return int.from_bytes(buf[pos + 1:pos + 1 + width], "little"), pos + 1 + width


def read_nul_str(buf: bytes, pos: int) -> tuple[bytes, int]:
    """A NUL-terminated string; a missing terminator at the end of the packet is tolerated."""
    end = buf.find(b"\0", pos)
    if end < 0:
        return buf[pos:], len(buf)
    return buf[pos:end], end + 1


def ok_packet(affected: int = 0) -> bytes:
    return (b"\x00" + lenenc_int(affected) + lenenc_int(0)
            + SERVER_STATUS_AUTOCOMMIT.to_bytes(2, "little") + b"\0\0")


def err_packet(code: int, message: str, state: str = "28000") -> bytes:
    return (b"\xff" + code.to_bytes(2, "little") + b"#" + state.encode()
            + message.encode()[:400])


def eof_packet() -> bytes:
    return b"\xfe\0\0" + SERVER_STATUS_AUTOCOMMIT.to_bytes(2, "little")


def column_definition(name: str, is_int: bool) -> bytes:
    if is_int:
        charset, length, type_, flags, decimals = CHARSET_BINARY, 21, MYSQL_TYPE_LONGLONG, 0x81, 0
    else:
        charset, length, type_, flags, decimals = (
            CHARSET_UTF8MB4_0900, 1024, MYSQL_TYPE_VAR_STRING, 0x01, 0x1F)
    return (lenenc_str(b"def") + lenenc_str(b"") + lenenc_str(b"") + lenenc_str(b"")
            + lenenc_str(name.encode()) + lenenc_str(b"") + b"\x0c"
            + charset.to_bytes(2, "little") + length.to_bytes(4, "little")
            + bytes([type_]) + flags.to_bytes(2, "little") + bytes([decimals]) + b"\0\0")


def xor_bytes(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))


def sha2_stage2(password: str) -> bytes:
    """What the server caches: SHA256(SHA256(password))."""
    return hashlib.sha256(hashlib.sha256(password.encode()).digest()).digest()


def sha2_scramble_matches(response: bytes, stage2: bytes, nonce: bytes) -> bool:
    """Fast-path check: response = SHA256(pw) XOR SHA256(stage2 + nonce)."""
    if len(response) != 32:
        return False
    stage1 = xor_bytes(response, hashlib.sha256(stage2 + nonce).digest())
    return hmac.compare_digest(hashlib.sha256(stage1).digest(), stage2)


class _Packets:
    """Framing over a blocking socket (plain or TLS): 3-byte length, 1-byte sequence."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.seq = 0

    def _recv_exact(self, n: int) -> bytes:
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 16))
            if not chunk:
                raise ClientGone
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def read(self) -> bytes:
        payload = b""
        while True:
            header = self._recv_exact(4)
            length = int.from_bytes(header[:3], "little")
            self.seq = (header[3] + 1) & 0xFF
            payload += self._recv_exact(length)
            if length < 0xFFFFFF:
                return payload

    def write(self, payload: bytes) -> None:
        out = bytearray()
        while True:
            part, payload = payload[:0xFFFFFF], payload[0xFFFFFF:]
            out += len(part).to_bytes(3, "little") + bytes([self.seq])
            out += part
            self.seq = (self.seq + 1) & 0xFF
            if len(part) < 0xFFFFFF:
                break
        self.sock.sendall(out)


@dataclass
class _Login:
    user: str
    tls: bool


class Sha2Server:
    """A threaded caching_sha2_password server on 127.0.0.1 and a free port.

    ``users`` maps names to passwords (default ``sha2``/``sha2_pw`` and ``sha2_empty``
    with no password). With *certs* it offers TLS (CLIENT_SSL) with the server pair.
    The password cache starts empty, so a user's first login takes full authentication
    and the next one the fast path; :meth:`forget` empties it again.
    """

    host = "127.0.0.1"

    def __init__(self, *, certs: TLSCerts | None = None,
                 users: Mapping[str, str] = DEFAULT_USERS) -> None:
        self.users = dict(users)
        self.certs = certs
        self.auth_log: list[AuthEvent] = []
        #: Handler failures other than a client hanging up; tests assert it stays empty.
        self.errors: list[str] = []
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[_Packets] = set()
        self._stopping = False
        self._tls: ssl.SSLContext | None = None
        self._rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key_pem = self._rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("Sha2Server is not started: call start() first")
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def forget(self, user: str | None = None) -> None:
        """Empty the password cache (for *user*, or all): the next login takes full auth."""
        with self._lock:
            if user is None:
                self._cache.clear()
            else:
                self._cache.pop(user, None)

    def start(self) -> Self:
        if self.certs is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(self.certs.server_cert, self.certs.server_key)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(64)
        self._listener = listener
        thread = threading.Thread(target=self._accept_loop, name="sha2-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Close the listener and every open connection, and join the threads."""
        self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for packets in conns:
            with contextlib.suppress(OSError):
                packets.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping:
            try:
                conn, _peer = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                      name="sha2-conn")
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        packets = _Packets(conn)
        with self._lock:
            self._conns.add(packets)
        try:
            login = self._authenticate(packets, next(self._ids))
            if login is not None:
                self._commands(packets, login)
        except (ClientGone, ConnectionError, ssl.SSLEOFError):
            pass
        except Exception as exc:  # recorded for the test to see
            if not self._stopping:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._conns.discard(packets)
            packets.sock.close()
            conn.close()

    # -- connection phase --------------------------------------------------------------

    def _handshake(self, conn_id: int, nonce: bytes) -> bytes:
        caps = SERVER_CAPABILITIES | (CLIENT_SSL if self._tls else 0)
        return (
            b"\x0a" + SERVER_VERSION.encode() + b"\0" + conn_id.to_bytes(4, "little")
            + nonce[:8] + b"\0" + (caps & 0xFFFF).to_bytes(2, "little")
            + bytes([CHARSET_UTF8MB4_0900]) + SERVER_STATUS_AUTOCOMMIT.to_bytes(2, "little")
            + (caps >> 16).to_bytes(2, "little") + bytes([len(nonce) + 1]) + b"\0" * 10
            + nonce[8:] + b"\0" + PLUGIN.encode() + b"\0"
        )

    def _authenticate(self, packets: _Packets, conn_id: int) -> _Login | None:
        # 20 bytes in 1..127 like MySQL's own: never a NUL, so clients can't cut it short.
        nonce = bytes(1 + b % 127 for b in os.urandom(20))
        packets.write(self._handshake(conn_id, nonce))
        response = packets.read()
        if len(response) < 32:
            raise ProtocolViolation(f"handshake response of {len(response)} bytes")
        caps = int.from_bytes(response[:4], "little")
        tls = False
        if caps & CLIENT_SSL and len(response) == 32:
            if self._tls is None:
                raise ProtocolViolation("client asked for TLS, which was not offered")
            packets.sock = self._tls.wrap_socket(packets.sock, server_side=True)
            tls = True
            response = packets.read()
            caps = int.from_bytes(response[:4], "little")
        if not caps & CLIENT_PROTOCOL_41:
            packets.write(err_packet(ER_HANDSHAKE, "this server speaks only protocol 4.1",
                                     "08S01"))
            return None
        user_b, pos = read_nul_str(response, 32)
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
            n, pos = read_lenenc_int(response, pos)
            auth, pos = response[pos:pos + n], pos + n
        elif caps & CLIENT_SECURE_CONNECTION:
            n = response[pos] if pos < len(response) else 0
            auth, pos = response[pos + 1:pos + 1 + n], pos + 1 + n
        else:
            auth, pos = read_nul_str(response, pos)
        if caps & CLIENT_CONNECT_WITH_DB and pos < len(response):
            _db, pos = read_nul_str(response, pos)
        plugin = PLUGIN
        if caps & CLIENT_PLUGIN_AUTH and pos < len(response):
            plugin_b, pos = read_nul_str(response, pos)
            plugin = plugin_b.decode(errors="replace")
        user = user_b.decode(errors="replace")

        switched = False
        if plugin != PLUGIN:
            packets.write(b"\xfe" + PLUGIN.encode() + b"\0" + nonce + b"\0")
            auth = packets.read()
            switched = True

        path, ok = self._check(packets, user, auth, nonce, tls)
        self.auth_log.append(AuthEvent(user=user, path=path, ok=ok, tls=tls, switched=switched))
        if not ok:
            packets.write(err_packet(
                ER_ACCESS_DENIED,
                f"Access denied for user '{user}'@'localhost' (using password: "
                f"{'YES' if auth else 'NO'})"))
            return None
        packets.write(ok_packet())
        return _Login(user=user, tls=tls)

    def _check(self, packets: _Packets, user: str, auth: bytes, nonce: bytes,
               tls: bool) -> tuple[str, bool]:
        """Run caching_sha2_password after the first auth response; (path, success)."""
        password = self.users.get(user)
        if auth in (b"", b"\0"):
            return "empty", password == ""
        if password is None or len(auth) != 32:
            return "refused", False
        with self._lock:
            cached = self._cache.get(user)
        if cached is not None and sha2_scramble_matches(auth, cached, nonce):
            packets.write(bytes([0x01, FAST_AUTH_SUCCESS]))
            return "fast", True
        # Cache miss or mismatch: ask for the password itself, as MySQL does.
        packets.write(bytes([0x01, PERFORM_FULL_AUTHENTICATION]))
        reply = packets.read()
        if tls:
            path, given = "full-tls", reply[:-1] if reply.endswith(b"\0") else reply
        elif reply == bytes([REQUEST_PUBLIC_KEY]):
            packets.write(b"\x01" + self.public_key_pem)
            path, given = "full-rsa", self._decrypt(packets.read(), nonce)
        elif len(reply) == self._rsa.key_size // 8:
            # The client already had our public key.
            path, given = "full-rsa", self._decrypt(reply, nonce)
        else:
            # Cleartext over plain TCP: refused, like MySQL ("requires secure connection").
            # The mariadb 10.11 CLI does this when its default --ssl fell back to plain
            # TCP because the server offered no TLS; give it --skip-ssl to get the RSA path.
            return "full-plain", False
        ok = hmac.compare_digest(given, password.encode())
        if ok:
            with self._lock:
                self._cache[user] = sha2_stage2(password)
        return path, ok

    def _decrypt(self, ciphertext: bytes, nonce: bytes) -> bytes:
        try:
            xored = self._rsa.decrypt(ciphertext, padding.OAEP(
                mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
        except ValueError:
            return b"\0invalid"
        plain = xor_bytes(xored, nonce)
        return plain[:-1] if plain.endswith(b"\0") else plain

    # -- command phase -----------------------------------------------------------------

    def _commands(self, packets: _Packets, login: _Login) -> None:
        while True:
            packets.seq = 0
            packet = packets.read()
            if not packet:
                raise ProtocolViolation("empty command packet")
            command = packet[0]
            if command == COM_QUIT:
                return
            if command in (COM_PING, COM_INIT_DB, COM_RESET_CONNECTION):
                packets.write(ok_packet())
            elif command == COM_QUERY:
                for reply in self._answer(packet[1:].decode(errors="replace"), packets, login):
                    packets.write(reply)
            else:
                packets.write(err_packet(
                    ER_UNKNOWN_COM, f"command {command:#04x} is not supported by this"
                    " caching_sha2 test server", "08S01"))

    def _answer(self, query: str, packets: _Packets, login: _Login) -> list[bytes]:
        """Packets answering *query*: OK for SET, a one-row result for simple SELECTs."""
        text = query.strip().rstrip(";").strip()
        lowered = text.lower()
        if lowered.startswith("set "):
            return [ok_packet()]
        if lowered in ("show status like 'ssl_cipher'", "show session status like 'ssl_cipher'"):
            cipher = ""
            if isinstance(packets.sock, ssl.SSLSocket):
                cipher = (packets.sock.cipher() or ("",))[0]
            return _result(["Variable_name", "Value"], [["Ssl_cipher", cipher]], [False, False])
        match = re.fullmatch(r"select\s+(.+?)(\s+limit\s+\d+)?", text, re.IGNORECASE | re.DOTALL)
        if match is None:
            return [err_packet(ER_PARSE, f"this caching_sha2 test server cannot answer {text!r}:"
                               " it knows SET, SELECT <literals/functions> and"
                               " SHOW STATUS LIKE 'Ssl_cipher'", "42000")]
        names, values, ints = [], [], []
        for expr in (e.strip() for e in match.group(1).split(",")):
            value = self._evaluate(expr, login)
            if value is None:
                return [err_packet(ER_PARSE, f"this caching_sha2 test server cannot evaluate"
                                   f" {expr!r}", "42000")]
            names.append(expr)
            values.append(value)
            ints.append(bool(re.fullmatch(r"-?\d+", expr)))
        return _result(names, [values], ints)

    @staticmethod
    def _evaluate(expr: str, login: _Login) -> str | None:
        lowered = expr.lower()
        if re.fullmatch(r"-?\d+", expr):
            return str(int(expr))
        if len(expr) >= 2 and expr[0] == expr[-1] and expr[0] in "'\"":
            return expr[1:-1]
        return {
            "current_user()": f"{login.user}@%",
            "user()": f"{login.user}@localhost",
            "@@version": SERVER_VERSION,
            "version()": SERVER_VERSION,
            "@@version_comment": "chassis caching_sha2_password test server",
        }.get(lowered)


def _result(names: list[str], rows: list[list[str]], ints: list[bool]) -> list[bytes]:
    out = [lenenc_int(len(names))]
    out += [column_definition(n, i) for n, i in zip(names, ints)]
    out.append(eof_packet())
    out += [b"".join(lenenc_str(v.encode()) for v in row) for row in rows]
    out.append(eof_packet())
    return out
