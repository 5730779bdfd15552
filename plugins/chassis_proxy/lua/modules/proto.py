"""``mysql.proto``: MySQL Proxy's packet encoders and decoders for scripts.

Decoders take a payload (no 4-byte header) and return a table; string fields that are
empty are left out, as MySQL Proxy does. Encoders take the fields (read from the
script's table by the Lua shim) and return a payload. The byte layouts are MySQL
Proxy 0.8.5's, including its defaults (``to_challenge_packet{}`` announces
``5.0.99``, capabilities PROTOCOL_41|SECURE_CONNECTION and the challenge
``01234567890123456789``; a version number 30000..99999 is written as
``%d.%02d.%02d``) and its 21-byte challenge for plugin-auth servers (the 20 bytes and
the NUL the server sends). Malformed input makes the function raise a Lua error.

The Python functions return ``(table_or_value, None)`` or ``(None, message)``; the
shim raises the message in the script.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from chassis_mysql.constants import Capability, Command, FieldType
from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import EOF, ERR, OK
from chassis_mysql.resultset import DateTimeValue, TimeValue, null_bitmap_size, read_binary_value
from chassis_mysql.wire import Reader, write_lenenc_int

from chassis_proxy.lua.modules import LuaModule, ModuleContext
from chassis_proxy.lua.objects import lua_number

_P41 = int(Capability.PROTOCOL_41)
_SECURE = int(Capability.SECURE_CONNECTION)
_PLUGIN_AUTH = int(Capability.PLUGIN_AUTH)
_WITH_DB = int(Capability.CONNECT_WITH_DB)
_LENENC_DATA = int(Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA)

COM_STMT_PREPARE = int(Command.STMT_PREPARE)
COM_STMT_EXECUTE = int(Command.STMT_EXECUTE)
COM_STMT_CLOSE = int(Command.STMT_CLOSE)

_VERSION = re.compile(rb"\s*([+-]?\d+)\.\s*([+-]?\d+)\.\s*([+-]?\d+)")
_STRING_TYPES = frozenset(
    {FieldType.BLOB, FieldType.MEDIUM_BLOB, FieldType.LONG_BLOB, FieldType.TINY_BLOB,
     FieldType.STRING, FieldType.VARCHAR, FieldType.VAR_STRING}
)  # fmt: skip

Result = tuple[Any, bytes | None]


class ProtoError(Exception):
    """Malformed input for a mysql.proto function; the message goes to the script."""


def _u16(n: int) -> bytes:
    return struct.pack("<H", n & 0xFFFF)


def _u32(n: int) -> bytes:
    return struct.pack("<I", n & 0xFFFFFFFF)


def _nonempty(values: dict[str, Any]) -> dict[str, Any]:
    """MySQL Proxy leaves empty strings (and absent values) out of decoded tables."""
    return {k: v for k, v in values.items() if v is not None and v != b""}


def _wrap(name: str, fn: Callable[..., Any], table: Callable[..., Any]) -> Callable[..., Result]:
    def call(*args: Any) -> Result:
        try:
            value = fn(*args)
        except (ProtocolError, ProtoError, struct.error, ValueError, IndexError) as e:
            return None, f"{name}() failed: {e}".encode()
        if isinstance(value, dict):
            value = table(_nonempty(value))
        return value, None

    return call


# -- OK / ERR / EOF ------------------------------------------------------------------------


def from_err_packet(payload: bytes) -> dict[str, Any]:
    if payload[:1] != b"\xff":
        raise ProtoError(f"expected the first byte to be 0xff, got 0x{payload[:1].hex() or 'nothing'}")
    err = ERR.parse(payload)
    return {
        "errmsg": err.message.encode("utf-8", "surrogateescape"),
        "sqlstate": (err.sql_state or "").encode("latin-1"),
        "errcode": err.error_code,
    }


def to_err_packet(errmsg: bytes | None, sqlstate: bytes | None, errcode: float | None) -> bytes:
    state = (sqlstate or b"07000")[:5].ljust(5, b"0")
    message = (errmsg or b"")[:512]
    return b"\xff" + _u16(int(errcode or 0)) + b"#" + state + message


def from_ok_packet(payload: bytes) -> dict[str, Any]:
    if payload[:1] != b"\x00":
        raise ProtoError("expected the first byte to be 0x00")
    ok = OK.parse(payload, _P41)
    return {
        "server_status": int(ok.status),
        "insert_id": lua_number(ok.last_insert_id),
        "warnings": ok.warnings,
        "affected_rows": lua_number(ok.affected_rows),
    }


def to_ok_packet(server_status: float, insert_id: float, warnings: float, affected_rows: float) -> bytes:
    return (
        b"\x00"
        + write_lenenc_int(int(affected_rows) & (2**64 - 1))
        + write_lenenc_int(int(insert_id) & (2**64 - 1))
        + _u16(int(server_status))
        + _u16(int(warnings))
    )


def from_eof_packet(payload: bytes) -> dict[str, Any]:
    if payload[:1] != b"\xfe":
        raise ProtoError("expected the first byte to be 0xfe")
    r = Reader(payload, 1)
    warnings = r.u16()
    status = r.u16()
    return {"server_status": status, "warnings": warnings}


def to_eof_packet(server_status: float, warnings: float) -> bytes:
    return EOF(int(warnings) & 0xFFFF, int(server_status) & 0xFFFF).encode(_P41)  # type: ignore[arg-type]


# -- handshake ---------------------------------------------------------------------------------


def server_version_number(text: bytes) -> int:
    """``"5.5.5-10.11.6-MariaDB"`` -> 50505, as MySQL Proxy computes mysqld_version.

    Not :func:`chassis_mysql.handshake.version_number`, which is lenient (0 for no number,
    digits picked out of each part): ``from_challenge_packet`` follows MySQL Proxy's
    ``sscanf("%d.%d.%d")`` with its range check, and raises its errors.
    """
    m = _VERSION.match(text)
    if not m:
        raise ProtoError("protocol 10, but version number not parsable")
    major, minor, patch = (int(g) for g in m.groups())
    if not (0 <= minor <= 100 and 0 <= patch <= 100 and 0 <= major <= 10):
        raise ProtoError("protocol 10, but version number out of range")
    return major * 10000 + minor * 100 + patch


def from_challenge_packet(payload: bytes) -> dict[str, Any]:
    r = Reader(payload)
    protocol = r.u8()
    if protocol != 0x0A:
        raise ProtoError(f"unknown protocol {protocol}")
    version_text = r.nul_str()
    thread_id = r.u32()
    part1 = r.fixed(8)
    r.fixed(1)
    caps = r.u16()
    charset = r.u8()
    status = r.u16()
    caps |= r.u16() << 16
    data_len = r.u8()
    r.fixed(10)
    plugin = b""
    if caps & _PLUGIN_AUTH:
        part2_len = data_len - 8 if data_len > 8 else 0
        part2 = r.fixed(part2_len)
        r.fixed(12 - min(12, part2_len))
        rest = r.rest()
        nul = rest.find(b"\x00")
        plugin = rest if nul < 0 else rest[:nul]
        challenge = part1[: min(8, data_len)] + part2
        if len(challenge) != data_len:
            raise ProtoError("challenge length does not match its length byte")
    elif caps & _SECURE:
        challenge = part1 + r.fixed(12)
        r.fixed(1)
    else:
        challenge = part1
    return {
        "protocol_version": protocol,
        "server_version": server_version_number(version_text),
        "thread_id": thread_id,
        "capabilities": caps,
        "charset": charset,
        "server_status": status,
        "challenge": challenge,
        "auth_plugin_name": plugin,
    }


def to_challenge_packet(
    server_version: float | None,
    thread_id: float | None,
    capabilities: float | None,
    charset: float | None,
    server_status: float | None,
    challenge: bytes | None,
) -> bytes:
    version = int(server_version or 0)
    caps = _P41 | _SECURE if capabilities is None else int(capabilities)
    data = challenge or b""
    if 0 < len(data) < 8:
        raise ProtoError(f"challenge needs at least 8 bytes, got {len(data)}")
    if caps & _PLUGIN_AUTH and not data:
        raise ProtoError("a challenge is needed with CLIENT_PLUGIN_AUTH")
    if caps & _PLUGIN_AUTH and len(data) >= 255:
        raise ProtoError("challenge too long for CLIENT_PLUGIN_AUTH (max 254 bytes)")
    if 30000 < version < 100000:
        text = f"{version // 10000}.{version % 10000 // 100:02d}.{version % 100:02d}".encode()
    else:
        text = b"5.0.99"
    out = [
        b"\x0a",
        text,
        b"\x00",
        _u32(int(thread_id or 0)),
        data[:8] if data else b"01234567",
        b"\x00",
        _u16(caps),
        bytes((int(charset or 0) & 0xFF,)),
        _u16(int(server_status or 0)),
        _u16(caps >> 16),
        bytes((len(data),)) if caps & _PLUGIN_AUTH else b"\x00",
        b"\x00" * 10,
    ]
    if caps & _PLUGIN_AUTH:
        out.append(data[8:])
        if 50510 <= version < 50600 or version >= 50602:
            out.append(b"\x00")
    elif caps & _SECURE:
        out.append(data[8:] if data else b"890123456789")
        out.append(b"\x00")
    return b"".join(out)


def from_response_packet(payload: bytes, server_capabilities: float) -> dict[str, Any]:
    server_caps = int(server_capabilities) & 0xFFFFFFFF
    if len(payload) < 2:
        raise ProtoError("truncated packet: no capability flags")
    r = Reader(payload)
    low = payload[0] | payload[1] << 8
    database = plugin = b""
    if low & _P41:
        caps = r.u32()
        max_packet = r.u32()
        charset = r.u8()
        r.fixed(23)
        username = r.nul_str()
        if caps & _LENENC_DATA:
            response = r.lenenc_str_nonnull("auth response")
        elif server_caps & _SECURE:
            response = r.fixed(r.u8())
        else:
            response = r.nul_str()
        if server_caps & _WITH_DB and caps & _WITH_DB:
            database = r.nul_str()
        if server_caps & _PLUGIN_AUTH and caps & _PLUGIN_AUTH:
            plugin = r.nul_str()
    else:
        caps = r.u16()
        max_packet = r.u24()
        charset = 0
        username = r.nul_str()
        response = r.rest()
    return {
        "capabilities": caps,
        "server_capabilities": server_caps,
        "max_packet_size": max_packet,
        "charset": charset,
        "username": username,
        "response": response,
        "auth_plugin_name": plugin,
        "database": database,
    }


def to_response_packet(
    server_capabilities: float,
    capabilities: float | None,
    max_packet_size: float | None,
    charset: float | None,
    username: bytes | None,
    response: bytes | None,
    auth_plugin_name: bytes | None,
    database: bytes | None,
) -> bytes:
    server_caps = int(server_capabilities) & 0xFFFFFFFF
    caps = _SECURE | _P41 if capabilities is None else int(capabilities) & 0xFFFFFFFF
    user = username or b""
    auth = response or b""
    out: list[bytes] = []
    if not caps & _P41:
        out += [_u16(caps), struct.pack("<I", int(max_packet_size or 0) & 0xFFFFFF)[:3], user, b"\x00", auth]
        return b"".join(out)
    out += [_u32(caps), _u32(int(max_packet_size or 0)), bytes((int(charset or 0) & 0xFF,)), b"\x00" * 23]
    out += [user, b"\x00"]
    if server_caps & _SECURE:
        if len(auth) > 255:
            raise ProtoError("response longer than 255 bytes")
        out += [bytes((len(auth),)), auth]
    else:
        out += [auth, b"\x00"]
    if server_caps & _WITH_DB and database:
        out += [database, b"\x00"]
    if caps & _PLUGIN_AUTH and server_caps & _PLUGIN_AUTH:
        out += [auth_plugin_name or b"", b"\x00"]
    return b"".join(out)


# -- master.info ---------------------------------------------------------------------------------

_MASTERINFO = (
    ("master_lines", int),
    ("master_log_file", bytes),
    ("master_log_pos", int),
    ("master_host", bytes),
    ("master_user", bytes),
    ("master_password", bytes),
    ("master_port", int),
    ("master_connect_retry", int),
    ("master_ssl", int),
    ("master_ssl_ca", bytes),
    ("master_ssl_capath", bytes),
    ("master_ssl_cert", bytes),
    ("master_ssl_cipher", bytes),
    ("master_ssl_key", bytes),
    ("master_ssl_verify_server_cert", int),
)


def _strtoul(text: bytes) -> int:
    """C's strtoul(s, &end, 0) that must consume every character ("" is 0)."""
    s = text.strip()
    if not s:
        return 0
    neg = s[:1] == b"-"
    if s[:1] in b"+-":
        s = s[1:]
    if s[:2].lower() == b"0x":
        value = int(s[2:], 16)
    elif s[:1] == b"0" and len(s) > 1:
        value = int(s[1:], 8)
    else:
        value = int(s, 10)
    return (-value if neg else value) & 0xFFFFFFFF


def from_masterinfo_string(text: bytes) -> dict[str, Any]:
    lines = text.split(b"\n")
    values: dict[str, Any] = {}
    for i, (name, kind) in enumerate(_MASTERINFO):
        if name == "master_ssl_verify_server_cert" and values["master_lines"] < 15:
            break
        if i >= len(lines) - 1:  # every field needs its terminating newline
            raise ProtoError(f"master.info ends before {name}")
        raw = lines[i]
        try:
            values[name] = _strtoul(raw) if kind is int else raw
        except ValueError:
            raise ProtoError(f"{name} is not a number: {raw!r}") from None
    return values


def to_masterinfo_string(values: dict[str, Any]) -> bytes:
    out = []
    for name, kind in _MASTERINFO:
        if name == "master_ssl_verify_server_cert" and int(values.get("master_lines") or 0) < 15:
            break
        v = values.get(name)
        if kind is int:
            out.append(b"%d\n" % (int(v or 0) & 0xFFFFFFFF))
        else:
            out.append((v or b"") + b"\n")
    return b"".join(out)


# -- prepared statements ---------------------------------------------------------------------------


def _command(payload: bytes, com: int) -> Reader:
    r = Reader(payload)
    first = r.u8()
    if first != com:
        raise ProtoError(f"expected the first byte to be {com:02x}, got {first:02x}")
    return r


def from_stmt_prepare_packet(payload: bytes) -> dict[str, Any]:
    return {"stmt_text": _command(payload, COM_STMT_PREPARE).rest()}


def from_stmt_prepare_ok_packet(payload: bytes) -> dict[str, Any]:
    r = _command(payload, 0x00)
    stmt_id = r.u32()
    num_columns = r.u16()
    num_params = r.u16()
    r.fixed(1)
    warnings = r.u16()
    return {"stmt_id": stmt_id, "num_columns": num_columns, "num_params": num_params, "warnings": warnings}


def stmt_id_from_stmt_execute_packet(payload: bytes) -> int:
    return _command(payload, COM_STMT_EXECUTE).u32()


def from_stmt_close_packet(payload: bytes) -> dict[str, Any]:
    return {"stmt_id": _command(payload, COM_STMT_CLOSE).u32()}


def _param_value(value: object, ftype: int) -> Any:
    if isinstance(value, DateTimeValue):
        if ftype in (FieldType.DATE, FieldType.NEWDATE):
            return f"{value.year:04d}-{value.month:02d}-{value.day:02d}".encode()
        return value.text().encode()
    if isinstance(value, TimeValue):
        return value.text().encode()
    if isinstance(value, int):
        return lua_number(value)
    return value


def stmt_execute_params(payload: bytes, num_params: int) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The COM_STMT_EXECUTE fields and, when types are bound, ``[{type, value}]``."""
    r = _command(payload, COM_STMT_EXECUTE)
    head: dict[str, Any] = {"stmt_id": r.u32(), "flags": r.u8(), "iteration_count": r.u32()}
    head["new_params_bound"] = False
    if num_params <= 0:
        return head, None
    bitmap = r.fixed(null_bitmap_size(num_params, 0))
    bound = r.u8()
    head["new_params_bound"] = bool(bound)
    if not bound:
        return head, None
    types = [r.u16() for _ in range(num_params)]
    params = []
    for i, t in enumerate(types):
        ftype = t & 0xFF
        unsigned = bool(t & 0x8000)
        if bitmap[i // 8] & (1 << (i % 8)):
            params.append({"type": ftype})
            continue
        value = read_binary_value(r, ftype, unsigned)
        params.append({"type": ftype, "value": _param_value(value, ftype)})
    return head, params


def module(ctx: ModuleContext) -> LuaModule:
    table = ctx.table

    def execute(payload: bytes, num_params: float) -> Result:
        try:
            head, params = stmt_execute_params(bytes(payload), int(num_params))
        except (ProtocolError, ProtoError, ValueError) as e:
            return None, f"from_stmt_execute_packet() failed: {e}".encode()
        if params is not None:
            head["params"] = table([table(p) for p in params])
        return table(head), None

    def masterinfo_out(*values: Any) -> Result:
        return _wrap("to_masterinfo_string", to_masterinfo_string, table)(
            dict(zip((n for n, _ in _MASTERINFO), values))
        )

    plain: dict[str, Callable[..., Any]] = {
        "from_err_packet": from_err_packet,
        "to_err_packet": to_err_packet,
        "from_ok_packet": from_ok_packet,
        "to_ok_packet": to_ok_packet,
        "from_eof_packet": from_eof_packet,
        "to_eof_packet": to_eof_packet,
        "from_challenge_packet": from_challenge_packet,
        "to_challenge_packet": to_challenge_packet,
        "from_response_packet": from_response_packet,
        "to_response_packet": to_response_packet,
        "from_masterinfo_string": from_masterinfo_string,
        "from_stmt_prepare_packet": from_stmt_prepare_packet,
        "from_stmt_prepare_ok_packet": from_stmt_prepare_ok_packet,
        "stmt_id_from_stmt_execute_packet": stmt_id_from_stmt_execute_packet,
        "from_stmt_close_packet": from_stmt_close_packet,
    }
    functions = {name: _wrap(name, fn, table) for name, fn in plain.items()}
    functions["from_stmt_execute_packet"] = execute
    functions["to_masterinfo_string"] = masterinfo_out
    return LuaModule(name="mysql.proto", global_name="proto", functions=functions, shim_file="proto.lua")
