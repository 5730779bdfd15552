"""``SHOW VARIABLES``: the running configuration, with secrets masked.

One row per option of the chassis and every loaded plugin, named as on the command
line without its dashes (``proxy-address``), with the value in force and where it came
from (``command line``, ``defaults-file``, ``default``).

Masked (shown as ``********`` when set, empty when not): every option whose name
mentions ``password``, ``passwd``, ``secret``, ``passphrase``, ``token`` or
``credential``, since its value is the secret itself (``--admin-password``). Options
that name a *file* or a directory holding a secret (``--admin-password-file``,
``--proxy-ssl-key``) show their path: the console never reads a file's content, and
the path is what an operator checks.
"""

from __future__ import annotations

from typing import Any

MASK = "********"
#: Words in an option's name that make its value a secret.
SECRET_WORDS = ("password", "passwd", "secret", "passphrase", "token", "credential")
#: Endings of an option's name whose value is a path, shown even if the name has a secret word.
PATH_ENDINGS = ("-file", "-dir", "-path")


def is_secret(option: str) -> bool:
    """Whether the value of ``option`` (``admin-password``) must never be shown."""
    name = option.lower().replace("_", "-")
    return any(w in name for w in SECRET_WORDS) and not name.endswith(PATH_ENDINGS)


def show(value: Any) -> str:
    """A value as SHOW VARIABLES writes it: ON/OFF, lists comma-separated, unset empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    if isinstance(value, list | tuple):
        return ",".join(show(v) for v in value)
    return str(value)


def rows(values: dict[str, Any], sources: dict[str, str]) -> list[tuple[str, str, str]]:
    """(variable_name, value, source) for each option, sorted by name."""
    out = []
    for key in sorted(values):
        name = key.replace("_", "-")
        text = show(values[key])
        if text and is_secret(name):
            text = MASK
        out.append((name, text, sources.get(key, "default")))
    return out
