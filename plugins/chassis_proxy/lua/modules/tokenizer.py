"""``mysql.tokenizer``: split SQL into MySQL Proxy's tokens (``TK_*`` names and ids).

The ids are the order of MySQL Proxy's token enum, so scripts that compare
``token_id`` with numbers keep working. The rules are MySQL Proxy's lexer's:

* whitespace is dropped; keywords are case-insensitive and become ``TK_SQL_<WORD>``;
* ``'...'`` and ``"..."`` are ``TK_STRING`` and backticks ``TK_LITERAL``, without their
  quotes; a doubled quote stands for one quote, backslash escapes are kept as written;
* unquoted names (letters, digits, ``_``, ``@``, not only digits) are ``TK_LITERAL``,
  ``a.b.c`` is split into literal/dot tokens, and a name directly followed by ``(`` is
  ``TK_FUNCTION``;
* ``1``, ``1.5``, ``.5``, ``1e5`` are ``TK_INTEGER``/``TK_FLOAT``;
* ``/* */`` is ``TK_COMMENT`` and ``/*! */`` ``TK_COMMENT_MYSQL`` (text without the
  delimiters), ``-- `` comments run to the end of the line (``#`` is not a comment);
* operators have their own tokens and any other byte is ``TK_UNKNOWN``.

One difference: a quote of the other kind right after a closing quote (``'a'"b"``) no
longer keeps the string open, which MySQL Proxy's lexer got wrong.
"""

from __future__ import annotations

import re
from typing import Any

from chassis_proxy.lua.modules import LuaModule, ModuleContext

_BASE_TOKENS = (
    "UNKNOWN",
    "LE", "GE", "LT", "GT", "EQ", "NE",
    "STRING", "COMMENT", "LITERAL", "FUNCTION",
    "INTEGER", "FLOAT", "DOT", "COMMA",
    "ASSIGN", "OBRACE", "CBRACE", "SEMICOLON",
    "STAR", "PLUS", "MINUS", "DIV",
    "BITWISE_AND", "BITWISE_OR", "BITWISE_XOR",
    "LOGICAL_AND", "LOGICAL_OR",
)  # fmt: skip

#: MySQL Proxy's keyword list, in its enum order (TK_SQL_ACCESSIBLE is id 28).
KEYWORDS: tuple[str, ...] = (
    "ACCESSIBLE", "ACTION", "ADD", "ALL", "ALTER", "ANALYZE", "AND", "AS", "ASC", "ASENSITIVE",
    "BEFORE", "BETWEEN", "BIGINT", "BINARY", "BIT", "BLOB", "BOTH", "BY", "CALL", "CASCADE",
    "CASE", "CHANGE", "CHAR", "CHARACTER", "CHECK", "COLLATE", "COLUMN", "CONDITION",
    "CONSTRAINT", "CONTINUE", "CONVERT", "CREATE", "CROSS", "CURRENT_DATE", "CURRENT_TIME",
    "CURRENT_TIMESTAMP", "CURRENT_USER", "CURSOR", "DATABASE", "DATABASES", "DATE", "DAY_HOUR",
    "DAY_MICROSECOND", "DAY_MINUTE", "DAY_SECOND", "DEC", "DECIMAL", "DECLARE", "DEFAULT",
    "DELAYED", "DELETE", "DESC", "DESCRIBE", "DETERMINISTIC", "DISTINCT", "DISTINCTROW", "DIV",
    "DOUBLE", "DROP", "DUAL", "EACH", "ELSE", "ELSEIF", "ENCLOSED", "ENUM", "ESCAPED",
    "EXISTS", "EXIT", "EXPLAIN", "FALSE", "FETCH", "FLOAT", "FLOAT4", "FLOAT8", "FOR", "FORCE",
    "FOREIGN", "FROM", "FULLTEXT", "GRANT", "GROUP", "HAVING", "HIGH_PRIORITY",
    "HOUR_MICROSECOND", "HOUR_MINUTE", "HOUR_SECOND", "IF", "IGNORE", "IN", "INDEX", "INFILE",
    "INNER", "INOUT", "INSENSITIVE", "INSERT", "INT", "INT1", "INT2", "INT3", "INT4", "INT8",
    "INTEGER", "INTERVAL", "INTO", "IS", "ITERATE", "JOIN", "KEY", "KEYS", "KILL", "LEADING",
    "LEAVE", "LEFT", "LIKE", "LIMIT", "LINEAR", "LINES", "LOAD", "LOCALTIME", "LOCALTIMESTAMP",
    "LOCK", "LONG", "LONGBLOB", "LONGTEXT", "LOOP", "LOW_PRIORITY",
    "MASTER_SSL_VERIFY_SERVER_CERT", "MATCH", "MEDIUMBLOB", "MEDIUMINT", "MEDIUMTEXT",
    "MIDDLEINT", "MINUTE_MICROSECOND", "MINUTE_SECOND", "MOD", "MODIFIES", "NATURAL", "NO",
    "NOT", "NO_WRITE_TO_BINLOG", "NULL", "NUMERIC", "ON", "OPTIMIZE", "OPTION", "OPTIONALLY",
    "OR", "ORDER", "OUT", "OUTER", "OUTFILE", "PRECISION", "PRIMARY", "PROCEDURE", "PURGE",
    "RANGE", "READ", "READ_ONLY", "READS", "READ_WRITE", "REAL", "REFERENCES", "REGEXP",
    "RELEASE", "RENAME", "REPEAT", "REPLACE", "REQUIRE", "RESTRICT", "RETURN", "REVOKE",
    "RIGHT", "RLIKE", "SCHEMA", "SCHEMAS", "SECOND_MICROSECOND", "SELECT", "SENSITIVE",
    "SEPARATOR", "SET", "SHOW", "SMALLINT", "SPATIAL", "SPECIFIC", "SQL", "SQL_BIG_RESULT",
    "SQL_CALC_FOUND_ROWS", "SQLEXCEPTION", "SQL_SMALL_RESULT", "SQLSTATE", "SQLWARNING", "SSL",
    "STARTING", "STRAIGHT_JOIN", "TABLE", "TERMINATED", "TEXT", "THEN", "TIME", "TIMESTAMP",
    "TINYBLOB", "TINYINT", "TINYTEXT", "TO", "TRAILING", "TRIGGER", "TRUE", "UNDO", "UNION",
    "UNIQUE", "UNLOCK", "UNSIGNED", "UPDATE", "USAGE", "USE", "USING", "UTC_DATE", "UTC_TIME",
    "UTC_TIMESTAMP", "VALUES", "VARBINARY", "VARCHAR", "VARCHARACTER", "VARYING", "WHEN",
    "WHERE", "WHILE", "WITH", "WRITE", "X509", "XOR", "YEAR_MONTH", "ZEROFILL",
)  # fmt: skip

#: Token names by id: TK_UNKNOWN (0) ... TK_SQL_ZEROFILL, TK_COMMENT_MYSQL (261).
TOKEN_NAMES: tuple[str, ...] = (
    tuple(f"TK_{t}" for t in _BASE_TOKENS)
    + tuple(f"TK_SQL_{k}" for k in KEYWORDS)
    + ("TK_COMMENT_MYSQL",)
)
TOKEN_IDS = {name: i for i, name in enumerate(TOKEN_NAMES)}

_KEYWORD_IDS = {k.encode(): TOKEN_IDS[f"TK_SQL_{k}"] for k in KEYWORDS}

TK_UNKNOWN = TOKEN_IDS["TK_UNKNOWN"]
TK_STRING = TOKEN_IDS["TK_STRING"]
TK_COMMENT = TOKEN_IDS["TK_COMMENT"]
TK_LITERAL = TOKEN_IDS["TK_LITERAL"]
TK_FUNCTION = TOKEN_IDS["TK_FUNCTION"]
TK_INTEGER = TOKEN_IDS["TK_INTEGER"]
TK_FLOAT = TOKEN_IDS["TK_FLOAT"]
TK_DOT = TOKEN_IDS["TK_DOT"]
TK_MINUS = TOKEN_IDS["TK_MINUS"]
TK_COMMENT_MYSQL = TOKEN_IDS["TK_COMMENT_MYSQL"]

_OPERATORS2 = {
    b"<=": "LE", b">=": "GE", b"<>": "NE", b"!=": "NE", b":=": "ASSIGN",
    b"&&": "LOGICAL_AND", b"||": "LOGICAL_OR",
}  # fmt: skip
_OPERATORS1 = {
    b"<": "LT", b">": "GT", b"=": "EQ", b"(": "OBRACE", b")": "CBRACE", b";": "SEMICOLON",
    b"*": "STAR", b"+": "PLUS", b"/": "DIV", b"-": "MINUS", b"&": "BITWISE_AND",
    b"|": "BITWISE_OR", b"^": "BITWISE_XOR", b",": "COMMA", b".": "DOT",
}  # fmt: skip
_OP2 = {k: TOKEN_IDS[f"TK_{v}"] for k, v in _OPERATORS2.items()}
_OP1 = {k[0]: TOKEN_IDS[f"TK_{v}"] for k, v in _OPERATORS1.items()}

_WS = frozenset(b" \t\n\r\f\v")
_DIGITS = frozenset(b"0123456789")
_NAME_START = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_@")

_PART = rb"[0-9]*[A-Za-z_@][A-Za-z0-9_@]*"
_FLOAT_E = re.compile(rb"(?:[0-9]*\.)?[0-9]+[eE][-+]?[0-9]+")
_NAME = re.compile(_PART + rb"(?:\." + _PART + rb"){0,2}")
_INTEGER = re.compile(rb"[0-9]+")
_FLOAT_DOT = re.compile(rb"[0-9]*\.[0-9]+")


def _keyword(word: bytes) -> int:
    return _KEYWORD_IDS.get(word.upper(), TK_LITERAL)


def _quoted(sql: bytes, i: int) -> tuple[int, bytes, int]:
    """Scan a quoted string starting at the quote at ``i``: (token id, text, next index)."""
    q = sql[i]
    tid = TK_LITERAL if q == 0x60 else TK_STRING
    out = bytearray()
    i += 1
    n = len(sql)
    while i < n:
        c = sql[i]
        if c == 0x5C:  # backslash: kept with the byte it escapes
            out += sql[i : i + 2]
            i += 2
        elif c == q:
            if i + 1 < n and sql[i + 1] == q:
                out.append(q)
                i += 2
            else:
                return tid, bytes(out), i + 1
        else:
            out.append(c)
            i += 1
    return tid, bytes(out), n


def tokenize(sql: bytes) -> list[tuple[int, bytes]]:
    """The tokens of ``sql`` as (id, text) pairs."""
    tokens: list[tuple[int, bytes]] = []
    append = tokens.append
    i = 0
    n = len(sql)
    while i < n:
        c = sql[i]
        if c in _WS:
            i += 1
            continue
        if c == 0x2D and sql.startswith(b"--", i):  # "-- " comment, or "--" before a newline
            j = i + 2
            nxt = sql[j : j + 1]
            if nxt in (b" ", b"\t"):
                end = sql.find(b"\n", j + 1)
                if end < 0:
                    append((TK_COMMENT, sql[j + 1 :]))
                    i = n
                else:
                    append((TK_COMMENT, sql[j + 1 : end]))
                    i = end + 1
                continue
            if nxt == b"\n" or sql.startswith(b"\r\n", j):
                append((TK_COMMENT, b""))
                i = j + (1 if nxt == b"\n" else 2)
                continue
        if c == 0x2F and sql.startswith(b"/*", i):
            mysql = sql.startswith(b"!", i + 2)
            start = i + (3 if mysql else 2)
            end = sql.find(b"*/", start)
            append((TK_COMMENT_MYSQL if mysql else TK_COMMENT, sql[start:] if end < 0 else sql[start:end]))
            i = n if end < 0 else end + 2
            continue
        if c in (0x22, 0x27, 0x60):
            tid, text, i = _quoted(sql, i)
            append((tid, text))
            continue
        if c in _DIGITS or c in _NAME_START or (c == 0x2E and sql[i + 1 : i + 2].isdigit()):
            best = 0
            kind = ""
            # the longest match wins; on a tie the earlier of these (MySQL Proxy's rule order)
            for name, rx in (("float", _FLOAT_E), ("name", _NAME), ("int", _INTEGER), ("float", _FLOAT_DOT)):
                m = rx.match(sql, i)
                if m and m.end() - i > best:
                    best, kind = m.end() - i, name
            if best:
                text = sql[i : i + best]
                i += best
                if kind == "name":
                    parts = text.split(b".")
                    is_function = i < n and sql[i] == 0x28
                    for k, part in enumerate(parts):
                        if k:
                            append((TK_DOT, b"."))
                        last = k == len(parts) - 1
                        append((TK_FUNCTION if last and is_function else _keyword(part), part))
                elif kind == "int":
                    append((TK_INTEGER, text))
                else:
                    append((TK_FLOAT, text))
                continue
        op = _OP2.get(sql[i : i + 2])
        if op is not None:
            append((op, sql[i : i + 2]))
            i += 2
            continue
        op1 = _OP1.get(c)
        append((TK_UNKNOWN if op1 is None else op1, sql[i : i + 1]))
        i += 1
    return tokens


def module(ctx: ModuleContext) -> LuaModule:
    def lua_tokenize(sql: bytes) -> Any:
        flat: list[Any] = []
        for tid, text in tokenize(bytes(sql)):
            flat.append(tid)
            flat.append(text)
        return ctx.table(flat)

    return LuaModule(
        name="mysql.tokenizer",
        global_name="tokenizer",
        functions={
            "tokenize": lua_tokenize,
            "names": lambda: ctx.table([n.encode() for n in TOKEN_NAMES]),
        },
        shim_file="tokenizer.lua",
    )
