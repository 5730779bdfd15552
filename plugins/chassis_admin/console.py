"""What the console does with a statement: ask the workers, answer with packets.

Queries (:class:`chassis_admin.sql.Query`) gather the tables they name from every worker
over the chassis control channel (``runtime.control.broadcast``), then SQLite answers
them (:mod:`chassis_admin.snapshot`). The commands that act (``UPDATE backends``,
``KILL``, ``TRUNCATE query_digest``) are control requests to the proxy plugin, which
every worker answers for itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from chassis_mysql.constants import ErrorCode, FieldType
from chassis_mysql.packets import err_packet, ok_packet

from chassis.logs import MESSAGE
from chassis.runtime import Runtime
from chassis_admin import snapshot, sql
from chassis_admin.results import text_resultset
from chassis_admin.tables import TABLES, Answers, Source

log = logging.getLogger("chassis.admin")

#: What a worker whose proxy does not know an op answers (an older proxy, or one
#: without digests yet): the table it fills is then empty for that worker.
UNKNOWN_OP = "unknown proxy control operation"


class AdminError(Exception):
    """A statement that cannot be answered: sent to the admin client as an ERR."""

    def __init__(self, message: str, code: int = ErrorCode.UNKNOWN_ERROR, sqlstate: str = "HY000") -> None:
        super().__init__(message)
        self.code = code
        self.sqlstate = sqlstate


class PluginMissing(AdminError):
    """The plugin that answers a control op is not loaded in this chassis."""


def tables_named(query: str) -> list[str]:
    """The admin tables a statement may read: those whose name is a word of it (quoted or
    not). Naming one too many costs a request; the others are not in the snapshot."""
    words = {w.lower() for w in re.findall(r"\w+", query)}
    return [name for name in TABLES if name in words]


class Console:
    """The statements of one console connection (``conn_id`` is for log lines)."""

    def __init__(self, runtime: Runtime, conn_id: int) -> None:
        self.runtime = runtime
        self.conn_id = conn_id

    async def broadcast(self, plugin: str, op: str, **args: Any) -> list[dict[str, Any]]:
        """Every worker's answer to ``op`` (each with ``worker`` and ``pid``); none from a
        worker whose plugin does not know ``op``. Raises :class:`PluginMissing` when the
        plugin is not loaded."""
        control = self.runtime.control
        if control is None:
            raise AdminError("the control channel between workers is not running")
        answers = []
        for reply in await control.broadcast({"plugin": plugin, "op": op, **args}):
            if "error" in reply:
                if UNKNOWN_OP in reply["error"]:
                    continue
                raise AdminError(f"worker {reply.get('worker', 0) + 1}: {reply['error']}")
            results = reply.get("results") or []
            if not results:
                raise PluginMissing(f"the {plugin} plugin is not loaded (--plugins=proxy,admin)")
            answers.append({"worker": reply["worker"], "pid": reply.get("pid"), **results[0]})
        return answers

    async def ask_proxy(self, op: str, **args: Any) -> list[dict[str, Any]]:
        return await self.broadcast("proxy", op, **args)

    async def answer(self, statement: sql.Statement | None) -> list[bytes]:
        try:
            return await self._answer(statement)
        except (AdminError, snapshot.QueryError) as e:  # PluginMissing too
            # A typo in the console is not the server's problem: debug level, one line.
            log.debug("admin connection %d: %s", self.conn_id, e)
            return [err_packet(e.code, str(e), e.sqlstate)]

    async def _answer(self, statement: sql.Statement | None) -> list[bytes]:
        if isinstance(statement, sql.SessionSet):
            return [ok_packet()]
        if isinstance(statement, sql.VersionComment):
            return text_resultset([("@@version_comment", FieldType.VAR_STRING)], [["chassis admin"]])
        if isinstance(statement, sql.Query):
            return await self.query(statement.sql)
        if isinstance(statement, sql.SetState):
            return await self.set_state(statement)
        if isinstance(statement, sql.Kill):
            return await self.kill(statement.connection_id)
        if isinstance(statement, sql.TruncateDigests):
            return await self.truncate_digests()
        raise AdminError("the admin console answers read-only SELECT and SHOW, and the commands "
                         "of 'SELECT * FROM help'", ErrorCode.PARSE_ERROR, "42000")

    async def gather(self, names: list[str]) -> Answers:
        """The answers the tables ``names`` are built from, every op asked at once; an
        optional op whose plugin is not loaded leaves its columns NULL."""
        required = {op for name in names for op in TABLES[name].needs}
        optional = {op for name in names for op in TABLES[name].optional} - required
        ops = sorted(required | optional)

        async def ask(op: str) -> list[dict[str, Any]]:
            try:
                return await self.broadcast(*op.split(".", 1))
            except PluginMissing:
                if op in optional:
                    return []
                raise

        return dict(zip(ops, await asyncio.gather(*(ask(op) for op in ops))))

    async def query(self, text: str) -> list[bytes]:
        names = tables_named(text)
        answers = await self.gather(names)
        config = self.runtime.config
        source = Source(answers, dict(config.values), dict(config.sources))
        tables = {name: TABLES[name].build(source) for name in names}
        result = await asyncio.to_thread(snapshot.run, text, tables)
        return text_resultset(result.columns, result.rows)

    async def set_state(self, statement: sql.SetState) -> list[bytes]:
        replies = await self.ask_proxy("set_backend_state", ndx=statement.backend_ndx, state=statement.state)
        refused = [r.get("message", "refused") for r in replies if not r.get("ok")]
        if refused:
            raise AdminError(refused[0])
        log.log(MESSAGE, "admin connection %d: backend %d set %s", self.conn_id,
                statement.backend_ndx, statement.state)
        return [ok_packet(affected_rows=1)]

    async def kill(self, connection_id: int) -> list[bytes]:
        """Close client connection ``connection_id``: ids are unique over the workers, so
        only the worker that holds it acts (and logs it)."""
        replies = await self.ask_proxy("kill", id=connection_id)
        if not any(r.get("ok") for r in replies):
            raise AdminError(f"Unknown thread id: {connection_id} (SELECT * FROM connections lists them)",
                             ErrorCode.NO_SUCH_THREAD)
        return [ok_packet(affected_rows=1)]

    async def truncate_digests(self) -> list[bytes]:
        replies = await self.ask_proxy("truncate_digests")
        if not replies:
            raise AdminError("the proxy keeps no query digests (its version has none)")
        log.log(MESSAGE, "admin connection %d: query digests truncated", self.conn_id)
        return [ok_packet()]
