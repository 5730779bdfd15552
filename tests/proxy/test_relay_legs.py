"""The relay legs in C (chassis_proxy/_relay.c) do what relay.py's reference classes do.

Real conversations recorded from MariaDB by four clients go through both kinds of legs,
with query digests on and off, the server's and the client's buffers whole or cut every
few bytes, each conversation twice in one connection so that repeated commands take the
hot path (an answer shaped as its slot's last one). Both must write the same bytes to
each side and end with the same counters, the same digest rows (all but the times) and
the same slow-log entries.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chassis_mysql.constants import Command
from chassis_mysql.framing import frame
from chassis_proxy import relay
from chassis_proxy.digests import DigestTable
from chassis_proxy.queries import QueryRecorder
from chassis_proxy.state import ConnectionState
from chassis_proxy.stats import Counters
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.codec.recorded import CLIENTS, conversation, negotiated

_TIMES = {"sum_time", "min_time", "max_time", "first_seen", "last_seen"}


def test_the_c_legs_are_built() -> None:
    """scripts/test installs a C compiler and builds the module (pip install -e .): the
    suite must run the legs that users run, not silently the reference."""
    assert relay._relay is not None, "chassis_proxy._relay is not built: run pip install -e ."
    if os.environ.get("CHASSIS_RELAY") != "python":
        assert relay.COMPILED


def test_the_c_module_knows_the_commands_the_codec_knows() -> None:
    c = relay._relay
    assert c is not None
    assert (c.COM_QUIT, c.COM_QUERY, c.COM_STMT_EXECUTE, c.COM_STMT_SEND_LONG_DATA, c.COM_STMT_CLOSE) == (
        Command.QUIT, Command.QUERY, Command.STMT_EXECUTE, Command.STMT_SEND_LONG_DATA, Command.STMT_CLOSE)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.protocol: Any = None

    def write(self, data: Any) -> None:
        self.out += data

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


class _Backend:
    def __init__(self) -> None:
        self.stats = Counters()
        self.addr = self.name = "127.0.0.1:3306"
        self.address = self


class _SlowLog:
    def __init__(self, long_query_time: float) -> None:
        self.long_query_time = long_query_time
        self.entries: list[bytes] = []

    def write(self, entry: bytes) -> None:
        self.entries.append(entry)


def _buffers(name: str) -> tuple[int, list[tuple[str, bytes]]]:
    """The conversation after the login, each run of one side's packets as one buffer."""
    conv = conversation(name)
    start = next(i for i, (d, s, _) in enumerate(conv) if d == "c" and s == 0)
    out: list[tuple[str, bytes]] = []
    for direction, seq, payload in conv[start:]:
        packet = frame(payload, seq)
        if out and out[-1][0] == direction:
            out[-1] = (direction, out[-1][1] + packet)
        else:
            out.append((direction, packet))
    # the QUIT that ends it goes last, after a second round of the same commands and
    # each SELECT with its answer three times more (repeated commands: the slots' path)
    body = [b for b in out if not (b[0] == "c" and b[1][4:5] == bytes([Command.QUIT]))]
    selects = [pair for i in range(len(body) - 1)
               if body[i][0] == "c" and body[i][1][4:11].upper() == b"\x03SELECT" and body[i + 1][0] == "s"
               for pair in (body[i], body[i + 1])]
    assert selects, name
    return negotiated(conv), body + body + selects * 3 + [("c", frame(bytes([Command.QUIT]), 0))]


def _run(compiled: bool, caps: int, buffers: list[tuple[str, bytes]], cut: tuple[int, int],
         digests: bool, slow: float | None) -> dict[str, Any]:
    slowlog = _SlowLog(slow) if slow is not None else None
    recorder = QueryRecorder(DigestTable() if digests else None, slowlog)  # type: ignore[arg-type]
    state = ConnectionState.__new__(ConnectionState)
    state.backend = _Backend()  # type: ignore[assignment]
    state.client = SimpleNamespace(username="app", default_db="sbtest", src=None)  # type: ignore[assignment]
    state.connection_id = 7
    queries = recorder.connection(state) if digests or slowlog else None
    client, server = _Transport(), _Transport()
    lost: list[Any] = []
    legs = relay.start(lambda leg, exc: lost.append(leg), client, server, b"", b"", queries, caps,
                       compiled=compiled)
    assert isinstance(legs[0], relay.CompiledLeg) == compiled
    assert client.protocol is legs[0] and server.protocol is legs[1]
    turns = []
    for direction, data in buffers:
        leg = legs[0] if direction == "c" else legs[1]
        step = cut[0] if direction == "c" else cut[1]
        pieces = [data] if not step else [data[i:i + step] for i in range(0, len(data), step)]
        for piece in pieces:
            leg.data_received(piece)
        turns.append(legs[0].turn[0])
    legs[1].connection_lost(None)
    rows = []
    if recorder.digests is not None:
        rows = sorted(({k: v for k, v in row.items() if k not in _TIMES}
                       for row in recorder.digests.as_rows()), key=repr)
    return {
        "to_server": bytes(server.out), "to_client": bytes(client.out), "turns": turns,
        "legs": [(leg.nbytes, leg.commands, leg.last, leg.is_client, leg.paused) for leg in legs],
        "rows": rows, "slow": len(slowlog.entries) if slowlog else 0, "lost": lost == [legs[1]],
        "by_command": list(state.backend.stats.by_command),
    }


@pytest.mark.parametrize("name", CLIENTS)
@pytest.mark.parametrize("cut", [(0, 0), (0, 1), (0, 5), (0, 64), (1, 1), (7, 3)])
@pytest.mark.parametrize("digests", [True, False])
def test_c_legs_relay_and_record_as_the_reference_does(name: str, cut: tuple[int, int], digests: bool) -> None:
    caps, buffers = _buffers(name)
    reference = _run(False, caps, buffers, cut, digests, None)
    compiled = _run(True, caps, buffers, cut, digests, None)
    assert compiled == reference
    sent = b"".join(d for side, d in buffers if side == "c")
    assert compiled["to_server"] == sent
    if digests and not cut[0]:  # (a command cut before its fifth byte is not recognised)
        assert any(row["count"] >= 4 for row in compiled["rows"])  # the repeats were recorded


@pytest.mark.parametrize("name", ["pymysql", "mariadb_cli"])
def test_c_legs_write_every_query_to_the_slow_log_as_the_reference_does(name: str) -> None:
    caps, buffers = _buffers(name)
    reference = _run(False, caps, buffers, (0, 0), True, 0.0)
    compiled = _run(True, caps, buffers, (0, 0), True, 0.0)
    assert compiled == reference
    assert compiled["slow"] >= 2
    assert _run(True, caps, buffers, (0, 0), True, 3600.0)["slow"] == 0


@pytest.mark.parametrize("compiled", [False, True])
def test_a_stopping_proxy_takes_the_next_command_only_between_commands(compiled: bool) -> None:
    client, server = _Transport(), _Transport()
    legs = relay.start(lambda leg, exc: None, client, server, b"", b"", None, 0, compiled=compiled)
    called: list[int] = []
    legs[0].at_command = lambda: called.append(1)
    query = frame(b"\x03SELECT 1", 0)
    legs[0].turn[0] = True  # a query is running: its answer must not be cut
    legs[0].data_received(query)
    assert called == [] and bytes(server.out) == query
    legs[1].data_received(frame(b"\x00\x00\x00\x02\x00\x00\x00", 1))
    assert legs[0].turn[0] is False
    legs[0].data_received(query)
    assert called == [1] and bytes(server.out) == query  # taken, not forwarded


@pytest.mark.parametrize("compiled", [False, True])
def test_flow_control_pauses_the_other_side(compiled: bool) -> None:
    class Pausable(_Transport):
        reading = True

        def pause_reading(self) -> None:
            self.reading = False

        def resume_reading(self) -> None:
            self.reading = True

    client, server = Pausable(), Pausable()
    legs = relay.start(lambda leg, exc: None, client, server, b"", b"", None, 0, compiled=compiled)
    legs[1].pause_writing()  # the server's transport is full: stop reading the client
    assert legs[1].paused and not client.reading
    legs[1].resume_writing()
    assert not legs[1].paused and client.reading


def test_c_legs_are_collected_with_their_connection() -> None:
    """The legs and the connection refer to each other (on_lost): the cycle is collected."""
    import gc
    import weakref

    class Owner:
        def lost(self, leg: Any, exc: Any) -> None:
            pass

    owner = Owner()
    ref = weakref.ref(owner)
    client, server = _Transport(), _Transport()
    owner.legs = relay.start(owner.lost, client, server, b"", b"", None, 0, compiled=True)  # type: ignore[attr-defined]
    client.protocol = server.protocol = None
    del owner
    gc.collect()
    assert ref() is None


def test_c_module_source_is_the_one_built() -> None:
    """A stale build would test old code: the .so must be newer than _relay.c."""
    assert relay._relay is not None
    source = Path(relay.__file__).with_name("_relay.c")
    assert Path(relay._relay.__file__).stat().st_mtime >= source.stat().st_mtime, (
        "chassis_proxy/_relay.c changed since it was built: run pip install -e .")


_QUERY_PACKETS = [frame(b"\x03SELECT 1", 0), frame(b"\x03SELECT 2", 0),
                  frame(b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00", 0), frame(b"\x19\x01\x00\x00\x00", 0),
                  frame(b"\x01", 0), frame(b"\x0e", 0)]
_ANSWERS = [frame(b"\x00\x00\x00\x02\x00\x00\x00", 1), frame(b"\xff\x15\x04#28000denied", 1),
            frame(b"\x01", 1)
            + frame(b"\x03def\x00\x00\x00\x011\x00\x0c?\x00\x01\x00\x00\x00\x08\x81\x00\x00\x00\x00", 2)
            + frame(b"\x011", 3) + frame(b"\xfe\x00\x00\x02\x00\x00\x00", 4)]


@given(steps=st.lists(st.tuples(
    st.sampled_from("cs"),
    st.one_of(st.sampled_from(_QUERY_PACKETS + _ANSWERS), st.binary(max_size=40)),
    st.integers(min_value=0, max_value=9)), max_size=30),
    caps=st.sampled_from([0, 1 << 24, (1 << 24) | (1 << 9)]))
@settings(max_examples=300, deadline=None)
def test_c_legs_match_the_reference_on_any_bytes(steps: list[tuple[str, bytes, int]], caps: int) -> None:
    """Whatever the client and the server send (commands, answers, garbage, cut anywhere),
    the C legs write, count and record what the reference does, and never crash."""
    buffers = [(side, data) for side, data, _ in steps if data]
    cut = (steps[0][2], steps[-1][2]) if steps else (0, 0)
    reference = _run(False, caps, buffers, cut, True, 0.0)
    compiled = _run(True, caps, buffers, cut, True, 0.0)
    assert compiled == reference
