"""The parts of a scripted command where the server, or the script, waits for the client.

A response can stop half-way for the client's packets: a LOCAL INFILE request (the
client sends the file, then an empty packet) or an authentication exchange of
COM_CHANGE_USER. :func:`exchange` pumps such a response to its end, relaying what the
client sends while the server waits; :func:`send_answer` sends a script's own answer and,
when that answer asks for a file, plays the server's part. These run in the scripted
session's coroutine (:mod:`chassis_proxy.scripted`), handed the connection's state.
"""

from __future__ import annotations

from chassis_mysql.constants import ErrorCode
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import frame_all
from chassis_mysql.infile import is_local_infile_request
from chassis_mysql.packets import err_packet, ok_packet
from chassis_mysql.response import ResponseTracker

from chassis_proxy.channel import ChannelTimeout
from chassis_proxy.errors import ConnectionGone
from chassis_proxy.pumps import ResponsePump
from chassis_proxy.state import ConnectionState

_UNKNOWN_ERROR = int(ErrorCode.UNKNOWN_ERROR)


def send_packets(state: ConnectionState, payloads: list[bytes], seq: int) -> int:
    """Frame ``payloads`` for the client from sequence id ``seq`` and write them in one
    buffer; returns the next sequence id."""
    data, seq = frame_all(payloads, seq)
    if data:
        state.bytes_out += len(data)
        state.client_ch.write(data)
    return seq


async def run_pump(state: ConnectionState, pump: ResponsePump) -> None:
    """Run ``pump`` to the end of its response (or to the server's turn to wait)."""
    try:
        await pump.run()
    except ProtocolError as e:
        raise ConnectionGone(f"backend {state.backend_name()} sent a malformed "
                             f"response: {e}") from None


async def exchange(state: ConnectionState, tracker: ResponseTracker, *, deliver: bool,
                   keep: bool, client_seq: int, server_seq: int | None = None,
                   client_asked: bool = False,
                   pump: ResponsePump | None = None) -> ResponsePump:
    """Pump a response; relay the client's packets while the server waits for them.

    With ``server_seq`` the response has begun already (a StreamPump saw the server
    ask for the client's packets) and the exchange goes on from there. With
    ``client_asked`` a kept response's LOCAL INFILE request still goes to the client
    (it sent that statement and waits for the request), and its file to the server.
    """
    timeout = state.settings.read_timeout
    if pump is None:
        pump = ResponsePump(state, tracker, deliver=deliver, keep=keep, client_seq=client_seq)
        if server_seq is None:
            await run_pump(state, pump)
        else:
            pump.server_seq = server_seq
    while tracker.awaiting_client:
        server = state.server_ch
        assert server is not None
        if not deliver and client_asked and pump.packets and not pump.infile_relayed \
                and is_local_infile_request(pump.packets[0]):
            pump.client_seq = send_packets(state, pump.packets, client_seq)
            pump.packets.clear()
            pump.infile_relayed = True
        if not deliver and not pump.infile_relayed:
            # The client never saw the request (an injected LOAD DATA LOCAL, or an
            # injected COM_CHANGE_USER's auth switch): answer with an empty packet.
            tracker.feed_client(b"")
            pump.server_seq = server.send(b"", pump.server_seq)
        else:
            try:
                packet = await state.client_ch.read_packet(timeout)
            except ProtocolError as e:
                raise ConnectionGone(f"client {state.name}: {e}") from None
            except ChannelTimeout:
                raise ConnectionGone(f"client {state.name} sent no more of what the server "
                                     f"waits for (LOCAL INFILE data) for {timeout:g} s "
                                     "(--proxy-read-timeout)") from None
            tracker.feed_client(packet.payload)
            pump.server_seq = server.send(packet.payload, pump.server_seq)
            pump.client_seq = (packet.seq + 1) & 0xFF
        if tracker.awaiting_client:
            continue  # more LOCAL INFILE data to come
        await run_pump(state, pump)
    return pump


async def send_answer(state: ConnectionState, response: list[bytes], client_seq: int) -> None:
    """Send the script's answer; play the server's part of LOCAL INFILE if it asks."""
    if not response:
        response = [err_packet(_UNKNOWN_ERROR,
                               "(lua) handling proxy.response failed, check error-log")]
    seq = send_packets(state, response, client_seq)
    if is_local_infile_request(response[0]):
        # A LOCAL INFILE request without a server: take the file and throw it away.
        client = state.client_ch
        while True:
            packet = await client.read_packet(state.settings.read_timeout)
            seq = (packet.seq + 1) & 0xFF
            if not packet.payload:
                break
        client.send(ok_packet(), seq)
