"""Types of the C module _relay.c (relay.py's legs' hot path)."""

import asyncio
from collections.abc import Callable
from typing import Any

COM_QUIT: int
COM_QUERY: int
COM_STMT_EXECUTE: int
COM_STMT_SEND_LONG_DATA: int
COM_STMT_CLOSE: int

class Leg:
    on_lost: Callable[[Any, BaseException | None], None]
    transport: asyncio.Transport
    peer: asyncio.Transport
    last: bytes
    at_command: Callable[[], None] | None
    tracking: Any
    turn: list[bool]
    nbytes: int
    commands: int
    is_client: bool
    paused: bool
    kind: int
    def __init__(self, kind: int, on_lost: Callable[[Any, BaseException | None], None],
                 transport: asyncio.Transport, peer: asyncio.Transport, is_client: bool,
                 turn: list[bool], tracking: Any = None) -> None: ...
    def data_received(self, data: bytes) -> None: ...
