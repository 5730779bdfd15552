"""The command loop when a script is loaded (being written)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chassis_proxy.connection import ProxyConnection


async def serve(conn: ProxyConnection) -> None:
    raise NotImplementedError("scripted mode is not finished yet")


async def serve_without_backend(conn: ProxyConnection) -> None:
    raise NotImplementedError("scripted mode is not finished yet")
