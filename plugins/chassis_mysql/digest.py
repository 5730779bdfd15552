"""Query fingerprints: a statement's text with its literals taken out, for grouping.

``fingerprint(b"SELECT c FROM t WHERE id IN (1, 2) -- x")`` is
``b"select c from t where id in(?+)"``: comments dropped (except MySQL's executable
``/*! ... */``), strings, numbers, hex and bit literals and NULL become ``?``, IN- and
VALUES-lists of literals collapse to ``(?+)``, a multi-row INSERT counts as its first
row, whitespace is folded to single spaces and the text lowercased. The rules follow
``pt-fingerprint --match-embedded-numbers`` (Percona Toolkit) so that a digest here
groups queries as pt-query-digest does; where they part (docs/operations.md, "Query
digests") it is on purpose: a hex literal is one ``?`` (pt leaves ``?f`` of ``0x1F``), a
quoted string with a doubled quote is one ``?``, backquoted identifiers are kept as they
are, a comment between two words leaves a space, and trailing whitespace is dropped.

:func:`digest_of` names a fingerprint as pt-query-digest's "Query ID" does: ``0x`` and
the MD5 of the fingerprint in upper-case hex, so a digest seen here is found in a
pt-query-digest report of the slow log by the same id.

Works on bytes (what the wire carries; only ASCII letters are folded, as Perl's ``lc``
on bytes does) and is pure: no state, no I/O.
"""

from __future__ import annotations

import hashlib
import re

# A number where a word does not go on: 1, -1, 1.5, .5, 1e-3, 0x1F, 0b101; the sign
# goes with it, as pt-fingerprint takes it. Digits inside a name (sbtest1) stay.
_NUMBER_RE = (
    rb"(?=[-+.\d])(?:[-+]|(?<![\w$]))"  # (the lookahead lets the engine skip ahead fast)
    rb"(?:0[xX][0-9a-fA-F]+|0[bB][01]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w$])"
)
_NUMBER = re.compile(_NUMBER_RE)

# Strings, quoted identifiers, comments and numbers, found in one scan so that a quote inside a
# comment or a comment marker inside a string is taken for what it is.
_LEXEMES = re.compile(
    rb"""
      '(?:[^'\\]|\\.|'')*'?            # a string: \-escapes and doubled quotes inside
    | "(?:[^"\\]|\\.|"")*"?            # a "string" (MySQL's default sql_mode)
    | `(?:[^`]|``)*`?                  # a quoted identifier: kept
    | /\*(?!!)(?:[^*]|\*(?!/))*(?:\*/)?  # a comment, but not MySQL's /*! ... */
    | (?:--(?=\s|\Z)|\#)[^\r\n]*        # a comment to the end of the line (MySQL: "-- ")
    | NUMBER
    """.replace(b"NUMBER", _NUMBER_RE),
    re.VERBOSE | re.DOTALL,
)

# x'0F', b'101', N'text', _utf8mb4'text' once their string became ?.
_PREFIXED = re.compile(rb"(?<![\w$])(?:[xbn]|_[a-z0-9]+)\?", re.IGNORECASE)
_NULL = re.compile(rb"\bnull\b")
_LIST = re.compile(rb"\b(in|values?)(?:[\s,]*\([\s?,]*\))+")
_UNION = re.compile(rb"\b(select\s.*?)(?:(\sunion(?:\sall)?)\s\1)+")
_LIMIT = re.compile(rb"\blimit \?(?:, ?\?| offset \?)?")
_ASC = re.compile(rb"\s+asc\b")
_CALL = re.compile(rb"\s*(call\s+[^\s(]+)\(", re.IGNORECASE)
_USE = re.compile(rb"\s*use\s+(?:`(?:[^`]|``)*`|\S+)\s*;?\s*\Z", re.IGNORECASE)
_SPECIAL = (b"call", b"use")
# The first row of a multi-row INSERT/REPLACE ... VALUES (literals already replaced):
# the rest is cut, so that 1 row and 1000 rows of one statement group together.
_INSERTS = (b"insert", b"replace")
_FIRST_ROW = re.compile(rb"\bvalues\s*\((?:[^()]|\([^()]*\))*\)(?=\s*,\s*\()", re.IGNORECASE)


def _lexeme(match: re.Match[bytes]) -> bytes:
    text = match.group()
    first = text[:1]
    if first == b"`":
        return text
    if first == b"/" or first == b"#" or text[:2] == b"--":
        return b" "  # a comment: dropped, without gluing the words around it
    return b"?"  # a string or a number


def fingerprint(query: bytes) -> bytes:
    """The query with its literals, comments and layout taken out (see the module doc).

    Each step after the first is guarded by a cheap test of whether it can apply: this
    runs for every query a digest is kept of.
    """
    words = query.split(None, 1)
    if not words:
        return b""
    verb = words[0].lower()
    if verb in _SPECIAL:
        m = (_CALL if verb == b"call" else _USE).match(query)
        if m is not None:
            return m.group(1).lower() if verb == b"call" else b"use ?"
    strings = False
    if (b"'" in query or b'"' in query or b"`" in query or b"#" in query or b"/*" in query
            or b"--" in query):
        query = _LEXEMES.sub(_lexeme, query)  # the numbers too, outside `names`
        strings = True
    if verb in _INSERTS:
        m = _FIRST_ROW.search(query)
        if m is not None:
            query = query[: m.end()]
    query = _PREFIXED.sub(b"?", query) if strings else _NUMBER.sub(b"?", query)
    query = b" ".join(query.split()).lower()
    if b"null" in query:
        query = _NULL.sub(b"?", query)
    if b"in" in query or b"values" in query:
        query = _LIST.sub(rb"\1(?+)", query)
    if b"union" in query:
        query = _UNION.sub(rb"\1 /*repeat\2*/", query)
    if b"limit ?" in query:
        query = _LIMIT.sub(b"limit ?", query, count=1)
    at = query.find(b"order by ")
    if at >= 0 and b"asc" in query[at:]:
        query = query[:at] + _ASC.sub(b"", query[at:])
    return query


def digest_of(fingerprint: bytes) -> str:
    """The fingerprint's id: ``0x`` and its MD5 in upper-case hex (pt-query-digest's Query ID)."""
    return "0x" + hashlib.md5(fingerprint, usedforsecurity=False).hexdigest().upper()
