"""Query fingerprints (chassis_mysql.digest) on strings, and against the real pt-fingerprint.

pt-fingerprint's own code is run (``do /usr/bin/pt-fingerprint`` loads its
QueryRewriter, as the tool does; one perl process for the whole corpus) with
``--match-embedded-numbers``: digits inside names (``sbtest1``) are part of the name.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from chassis_mysql.digest import digest_of, fingerprint

from tests.digest.corpus import CORPUS

#: Runs pt-fingerprint's QueryRewriter::fingerprint on NUL-separated queries from stdin.
_PT_DRIVER = r"""
do "PT" or die "cannot load PT: $@ $!";
my $qr = QueryRewriter->new(QueryParser => QueryParser->new(), match_embedded_numbers => 1);
local $/ = "\0";
while (my $q = <STDIN>) { chomp $q; print $qr->fingerprint($q), "\0"; }
"""

#: Where we differ from pt-fingerprint on purpose (docs/operations.md, "Query digests"):
#: (query, our fingerprint, why).
DELIBERATE = [
    (b"SELECT * FROM t1 WHERE a = 2 -- and a trailing one", b"select * from t1 where a = ?",
     "pt keeps the space before a trailing comment: the same query without it groups apart"),
    (b"SELECT * FROM t WHERE id = 1  \n", b"select * from t where id = ?",
     "pt keeps one trailing space when the text ends in whitespace"),
    (b"SELECT * FROM t WHERE b = 0x1F", b"select * from t where b = ?",
     "pt takes the hex literal 0x1F for 0x1 and a name F (?f)"),
    (b"SELECT * FROM t WHERE b = X'0F'", b"select * from t where b = ?",
     "pt leaves the X of a hex string (x?), but not the x of x'0f'"),
    (b"SELECT * FROM t WHERE s = _utf8mb4'x'", b"select * from t where s = ?",
     "a string's character set introducer is part of the literal"),
    (b"SELECT * FROM t WHERE s = 'it''s'", b"select * from t where s = ?",
     "a doubled quote is one string (pt sees two: ??)"),
    (b"SELECT a/**/FROM t", b"select a from t", "pt does not see /**/ as a comment"),
    (b"SELECT 5--3", b"select ?-?", "MySQL starts a comment at '-- ' only (with the space)"),
    (b"SELECT 1abc FROM t", b"select 1abc from t", "a name may start with digits"),
    (b"SELECT `x 2`, `y-1` FROM t", b"select `x 2`, `y-1` from t",
     "a `quoted name` is kept as it is: numbers in it are not literals"),
]


def _pt_fingerprints(queries: list[bytes]) -> list[bytes]:
    tool = shutil.which("pt-fingerprint")
    assert tool, "pt-fingerprint is missing: scripts/lib/setup.sh installs percona-toolkit"
    done = subprocess.run(["perl", "-e", _PT_DRIVER.replace("PT", tool)],
                          input=b"\0".join(queries) + b"\0", capture_output=True, check=True,
                          timeout=120)
    out = done.stdout.split(b"\0")[:-1]
    assert len(out) == len(queries), done.stderr.decode(errors="replace")
    return out


def _groups(fingerprints: list[bytes]) -> list[list[int]]:
    found: dict[bytes, list[int]] = {}
    for i, fp in enumerate(fingerprints):
        found.setdefault(fp, []).append(i)
    return sorted(found.values())


def test_corpus_is_grouped_as_pt_fingerprint_groups_it() -> None:
    ours = [fingerprint(q) for q in CORPUS]
    theirs = _pt_fingerprints(CORPUS)
    # pt keeps a trailing space where a comment or whitespace ended the text (DELIBERATE)
    assert _groups(ours) == _groups([fp.rstrip(b" ") for fp in theirs])
    # and the text is the same, so the digest is pt-query-digest's Query ID
    assert [(q, fp) for q, fp in zip(CORPUS, ours)] == \
        [(q, fp.rstrip(b" ")) for q, fp in zip(CORPUS, theirs)]
    # the corpus does group: shapes repeat with other literals
    assert len(set(ours)) < len(CORPUS) * 3 // 4


@pytest.mark.parametrize(("query", "ours", "why"), DELIBERATE, ids=[d[2][:40] for d in DELIBERATE])
def test_deliberate_differences_from_pt_fingerprint(query: bytes, ours: bytes, why: str) -> None:
    assert fingerprint(query) == ours
    assert _pt_fingerprints([query]) != [ours], f"pt-fingerprint now agrees: {why}"


@pytest.mark.parametrize(("query", "expected"), [
    (b"SELECT c FROM sbtest1 WHERE id=5012", b"select c from sbtest1 where id=?"),
    (b"select * from t where a in (1, 2,3) and b in ('x')", b"select * from t where a in(?+) and b in(?+)"),
    (b"INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'), (3, 'z')", b"insert into t (a, b) values(?+)"),
    (b"INSERT INTO t (a, b) VALUES (1, NOW()), (2, NOW())", b"insert into t (a, b) values (?, now())"),
    (b"SELECT 'a -- b', \"c /* d */\" FROM t # e", b"select ?, ? from t"),
    (b"SELECT `x--1`, `it's` FROM `t`", b"select `x--1`, `it's` from `t`"),
    (b"SELECT * FROM t WHERE a IS NULL AND b = -1.5e-3", b"select * from t where a is ? and b = ?"),
    (b"SELECT /*!40001 SQL_NO_CACHE */ * FROM t", b"select /*!? sql_no_cache */ * from t"),
    (b"SELECT * FROM t ORDER BY a ASC, b DESC LIMIT 10, 20", b"select * from t order by a, b desc limit ?"),
    (b"CALL proc(1, 'two')", b"call proc"),
    (b"USE `my db`", b"use ?"),
    (b"", b""),
    (b"  \n ", b""),
    (b"SELECT 'unterminated", b"select ?"),
])
def test_fingerprint(query: bytes, expected: bytes) -> None:
    assert fingerprint(query) == expected


def test_digest_is_pt_query_digest_query_id() -> None:
    # pt-query-digest's make_checksum: the upper-case MD5 hex of the fingerprint, shown as 0x...
    assert digest_of(b"select ?") == "0x1FE1379FE2A31B8D16219655761820A2"
    assert digest_of(b"select ?") != digest_of(b"select ? from t")
