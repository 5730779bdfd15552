"""A bare MySQL packet socket for tests that must misbehave the way real clients cannot."""

from __future__ import annotations

import socket
import ssl
import struct


class RawClient:
    """Blocking socket with MySQL framing; no protocol logic at all."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def read_packet(self) -> tuple[int, bytes]:
        header = self.recv_exact(4)
        length = header[0] | header[1] << 8 | header[2] << 16
        return header[3], self.recv_exact(length)

    def send_packet(self, payload: bytes, seq: int) -> None:
        self.sock.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until_closed(self) -> bytes:
        """Everything the peer sends until it closes (raises on timeout)."""
        out = bytearray()
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return bytes(out)
            out += chunk

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Close with a TCP RST instead of a FIN: a client that crashed."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def login_packet(user: str, capabilities: int = 0x000BA205) -> bytes:
    """A HandshakeResponse41 with an empty password (enough for root on the test server)."""
    return (struct.pack("<IIB", capabilities, 16 * 1024 * 1024, 45) + b"\0" * 23
            + user.encode() + b"\0" + b"\0" + b"mysql_native_password\0")


def tls_login_in_one_write(client: RawClient, ctx: ssl.SSLContext, user: str,
                           reply_size: int) -> bytes:
    """After the greeting: the SSLRequest and the TLS ClientHello in one write (a fast
    client), the handshake, the login packet inside TLS; the first ``reply_size`` or more
    decrypted bytes of the answer (framed: header, then payload)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    ssl_request = struct.pack("<IIB", 0x000BA205 | 0x800, 1 << 24, 45) + b"\0" * 23
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass  # the ClientHello is in `outgoing`
    else:
        raise AssertionError("a TLS handshake cannot finish before the server speaks")
    client.send_raw(struct.pack("<I", 32)[:3] + b"\x01" + ssl_request + outgoing.read())
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            if outgoing.pending:
                client.send_raw(outgoing.read())
            data = client.sock.recv(65536)
            assert data, "the peer closed the connection during the TLS handshake"
            incoming.write(data)
    if outgoing.pending:
        client.send_raw(outgoing.read())
    body = login_packet(user)
    tls.write(struct.pack("<I", len(body))[:3] + b"\x02" + body)
    client.send_raw(outgoing.read())
    reply = b""
    while len(reply) < reply_size:
        try:
            reply += tls.read(65536)
        except ssl.SSLWantReadError:
            incoming.write(client.sock.recv(65536))
    return reply
