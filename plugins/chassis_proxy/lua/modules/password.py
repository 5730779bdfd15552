"""``mysql.password``: mysql_native_password arithmetic for scripts that check or rewrite
credentials (``hash``, ``scramble``, ``unscramble``, ``check``).

``hash(pw)`` is SHA1(pw); the server stores SHA1(SHA1(pw)). ``scramble(challenge,
hashed)`` is what a client sends: SHA1(pw) XOR SHA1(challenge + SHA1(SHA1(pw))). A
21-byte challenge (20 bytes and the NUL that plugin-auth servers append) is used
without its NUL; any other challenge is used whole.

The codec's :mod:`chassis_mysql.auth` has the same scramble, but its functions start
from the password itself (``scramble_native_password(password, salt)``) and cut every
salt to 20 bytes, while MySQL Proxy's module works on SHA1(pw), which a script may hold
without the password, and on the challenge as given; so the arithmetic is written here
over the stage-1 hash. The tests pin both against each other.
"""

from __future__ import annotations

import hashlib
import hmac

from chassis_mysql.auth import SCRAMBLE_LENGTH

from chassis_proxy.lua.modules import LuaModule, ModuleContext


def _sha1(*parts: bytes) -> bytes:
    h = hashlib.sha1()
    for p in parts:
        h.update(p)
    return h.digest()


def _challenge(challenge: bytes) -> bytes:
    if len(challenge) == SCRAMBLE_LENGTH + 1 and challenge.endswith(b"\x00"):
        return challenge[:SCRAMBLE_LENGTH]
    return challenge


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def password_hash(password: bytes) -> bytes:
    """SHA1(password): 20 raw bytes."""
    return _sha1(bytes(password))


def scramble(challenge: bytes, hashed: bytes) -> bytes:
    """The client's auth response from the challenge and SHA1(password); empty for no password."""
    if not hashed:
        return b""
    return _xor(hashed, _sha1(_challenge(bytes(challenge)), _sha1(hashed)))


def unscramble(challenge: bytes, response: bytes, double_hashed: bytes) -> bytes:
    """SHA1(password) back from a client's response, given SHA1(SHA1(password))."""
    return _xor(bytes(response), _sha1(_challenge(bytes(challenge)), bytes(double_hashed)))


def check(challenge: bytes, response: bytes, double_hashed: bytes) -> bool:
    """Whether ``response`` proves knowledge of the password whose SHA1(SHA1()) is given."""
    if len(response) != SCRAMBLE_LENGTH or len(double_hashed) != SCRAMBLE_LENGTH:
        return False
    hashed = unscramble(challenge, response, double_hashed)
    return hmac.compare_digest(_sha1(hashed), bytes(double_hashed))


def module(ctx: ModuleContext) -> LuaModule:
    return LuaModule(
        name="mysql.password",
        global_name="password",
        functions={
            "hash": password_hash,
            "scramble": scramble,
            "unscramble": unscramble,
            "check": check,
        },
        shim_file="password.lua",
    )
