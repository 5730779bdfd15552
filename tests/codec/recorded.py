"""Conversations recorded from a real MariaDB 10.11 by ``capture_vectors.py``.

Each is a list of ``(direction, seq, payload)``: ``"c"`` client to server, ``"s"``
server to client, starting with the server's handshake.
"""

from __future__ import annotations

import json
import pathlib

from chassis_mysql.handshake import HandshakeResponse41, HandshakeV10

VECTORS = pathlib.Path(__file__).parent / "vectors"
CLIENTS = ("pymysql", "connector", "mysqlclient", "mariadb_cli")

Conversation = list[tuple[str, int, bytes]]


def conversation(name: str) -> Conversation:
    """The recorded packets of one client's session."""
    raw = json.loads((VECTORS / f"{name}.json").read_text())
    return [(d, int(s), bytes.fromhex(h)) for d, s, h in raw]


def negotiated(conv: Conversation) -> int:
    """The capabilities both sides agreed on (server's handshake AND client's response)."""
    server = HandshakeV10.parse(conv[0][2]).capabilities
    client = HandshakeResponse41.parse(conv[1][2]).capabilities
    return int(server) & int(client)


def commands(conv: Conversation) -> list[tuple[bytes, list[bytes]]]:
    """After the login: each client packet with the server packets that answered it.

    A client packet sent with a sequence id other than 0 belongs to the exchange in
    progress (LOCAL INFILE data, an auth switch answer), so it is kept with it as a
    ``b"c:"``-prefixed entry.
    """
    out: list[tuple[bytes, list[bytes]]] = []
    start = next(i for i, (d, s, _) in enumerate(conv) if d == "c" and s == 0)
    for direction, seq, payload in conv[start:]:
        if direction == "c" and seq == 0:
            out.append((payload, []))
        elif direction == "c":
            out[-1][1].append(b"c:" + payload)
        else:
            out[-1][1].append(payload)
    return out


def server_only(answer: list[bytes]) -> bool:
    """True when the client sent nothing within the exchange (no LOCAL INFILE data, no
    auth switch answer): the answer is the server's alone (see :func:`commands`)."""
    return not any(p.startswith(b"c:") for p in answer)
