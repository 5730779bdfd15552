"""proxy.tokenizer: tokenize, normalize, first_stmt_token, bare_tokens, tokens_to_query,
tokens_without_comments, through a real script on the Lua host."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.lualib.harness import Lua, lua_str


def tokens(lua: Lua, sql: str) -> list[tuple[str, str]]:
    return [tuple(t) for t in lua.eval(f"return dump(tokenizer.tokenize({lua_str(sql)}))")]


def normalize(lua: Lua, sql: str) -> str:
    return str(lua.eval(f"return tokenizer.normalize(tokenizer.tokenize({lua_str(sql)}))"))


def to_query(lua: Lua, sql: str, *bounds: int) -> str:
    extra = "".join(f", {b}" for b in bounds)
    return str(lua.eval(f"return tokenizer.tokens_to_query(tokenizer.tokenize({lua_str(sql)}){extra})"))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", [("TK_SQL_SELECT", "SELECT"), ("TK_INTEGER", "1")]),
        (
            "select * from t where a >= 1.5 and b <> 'x'",
            [
                ("TK_SQL_SELECT", "select"), ("TK_STAR", "*"), ("TK_SQL_FROM", "from"),
                ("TK_LITERAL", "t"), ("TK_SQL_WHERE", "where"), ("TK_LITERAL", "a"),
                ("TK_GE", ">="), ("TK_FLOAT", "1.5"), ("TK_SQL_AND", "and"), ("TK_LITERAL", "b"),
                ("TK_NE", "<>"), ("TK_STRING", "x"),
            ],
        ),
        # comments: the text without the delimiters; /*! */ has its own token
        (
            "/* lead */ SELECT /*!40001 SQL_NO_CACHE */ 1 -- trailing",
            [
                ("TK_COMMENT", " lead "), ("TK_SQL_SELECT", "SELECT"),
                ("TK_COMMENT_MYSQL", "40001 SQL_NO_CACHE "), ("TK_INTEGER", "1"),
                ("TK_COMMENT", "trailing"),
            ],
        ),
        # strings: quotes removed, backslash escapes kept, a doubled quote made single
        (
            r"SELECT 'it\'s', 'it''s', " + '"dq"',
            [
                ("TK_SQL_SELECT", "SELECT"), ("TK_STRING", r"it\'s"), ("TK_COMMA", ","),
                ("TK_STRING", "it's"), ("TK_COMMA", ","), ("TK_STRING", "dq"),
            ],
        ),
        # backticks: a name, even when it is a keyword; db.tbl split with a dot token
        (
            "SELECT `order`.`select` FROM shop.items",
            [
                ("TK_SQL_SELECT", "SELECT"), ("TK_LITERAL", "order"), ("TK_DOT", "."),
                ("TK_LITERAL", "select"), ("TK_SQL_FROM", "FROM"), ("TK_LITERAL", "shop"),
                ("TK_DOT", "."), ("TK_LITERAL", "items"),
            ],
        ),
        # a name right before "(" is a function; operators
        (
            "SELECT COUNT(*), a+b-c/d, @v := 1",
            [
                ("TK_SQL_SELECT", "SELECT"), ("TK_FUNCTION", "COUNT"), ("TK_OBRACE", "("),
                ("TK_STAR", "*"), ("TK_CBRACE", ")"), ("TK_COMMA", ","), ("TK_LITERAL", "a"),
                ("TK_PLUS", "+"), ("TK_LITERAL", "b"), ("TK_MINUS", "-"), ("TK_LITERAL", "c"),
                ("TK_DIV", "/"), ("TK_LITERAL", "d"), ("TK_COMMA", ","), ("TK_LITERAL", "@v"),
                ("TK_ASSIGN", ":="), ("TK_INTEGER", "1"),
            ],
        ),
        ("BEGIN", [("TK_LITERAL", "BEGIN")]),
    ],
)  # fmt: skip
def test_tokenize_gives_mysql_proxys_tokens(lua: Lua, sql: str, expected: list[tuple[str, str]]) -> None:
    assert tokens(lua, sql) == expected


def test_token_ids_are_mysql_proxys(lua: Lua) -> None:
    got = lua.eval(
        "local t = tokenizer.tokenize('SELECT a FROM t') return { t[1].token_id, t[2].token_id, t[3].token_id }"
    )
    assert got == [204, 9, 105]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE id = 1", "SELECT * FROM `t` WHERE `id` = ? "),
        ("select count(*) from t", "SELECT COUNT( * ) FROM `t` "),
        # literals of every kind become ?, the IN list keeps its shape
        ("SELECT 'a', \"b\", 1.5, 1e3 FROM t WHERE x IN (1, 2, 3)",
         "SELECT ? , ? , ? , ? FROM `t` WHERE `x` IN ( ? , ? , ? ) "),
        ("SELECT -2", "SELECT - ? "),
        # comments go, /*! */ stays verbatim
        ("/* who */ SELECT 1 -- why", "SELECT ? "),
        ("SELECT /*!40001 SQL_NO_CACHE */ a FROM t", "SELECT /*!40001 SQL_NO_CACHE */ `a` FROM `t` "),
        # transaction words are kept only at the start of the statement
        ("commit", "COMMIT "),
        ("rollback", "ROLLBACK "),
        ("begin", "BEGIN "),
        ("start transaction", "START TRANSACTION "),
        ("/* c */ Begin", "BEGIN "),
        ("SELECT begin, commit FROM t", "SELECT `begin` , `commit` FROM `t` "),
        # variables as written; backticks inside a name doubled
        ("SET @a = 1", "SET @a = ? "),
        ("SELECT `a``b` FROM t", "SELECT `a``b` FROM `t` "),
    ],
)  # fmt: skip
def test_normalize_replaces_literals_and_quotes_names(lua: Lua, sql: str, expected: str) -> None:
    assert normalize(lua, sql) == expected


def test_same_shape_queries_normalize_alike(lua: Lua) -> None:
    a = normalize(lua, "SELECT name FROM users WHERE id = 17 AND email = 'x@example.com'")
    b = normalize(lua, 'select   name from users\nwhere id=4 and email="y@example.org" /* tag */')
    assert a == b == "SELECT `name` FROM `users` WHERE `id` = ? AND `email` = ? "


def test_normalize_takes_sql_text_too(lua: Lua) -> None:
    assert lua.eval("return tokenizer.normalize('SELECT 1')") == "SELECT ? "


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("/* x */ -- y\n SELECT 1", ["TK_SQL_SELECT", "SELECT"]),
        ("-- c\nbegin", ["TK_LITERAL", "begin"]),
        ("/*!40101 SET NAMES utf8 */", ["TK_COMMENT_MYSQL", "40101 SET NAMES utf8 "]),
        ("/* only a comment */", None),
        ("", None),
    ],
)
def test_first_stmt_token_skips_comments(lua: Lua, sql: str, expected: list[str] | None) -> None:
    got = lua.eval(
        f"local t = tokenizer.first_stmt_token(tokenizer.tokenize({lua_str(sql)})) "
        "return t and { t.token_name, t.text }"
    )
    assert got == expected


def test_bare_tokens_drop_comments_and_quote_strings_on_request(lua: Lua) -> None:
    sql = lua_str("SELECT 'a', b /* c */ FROM t")
    bare = lua.eval(f"return tokenizer.bare_tokens(tokenizer.tokenize({sql}))")
    quoted = lua.eval(f"return tokenizer.bare_tokens(tokenizer.tokenize({sql}), true)")
    assert bare == ["SELECT", "a", ",", "b", "FROM", "t"]
    assert quoted == ["SELECT", "'a'", ",", "b", "FROM", "t"]


def test_tokens_without_comments_gives_the_texts(lua: Lua) -> None:
    got = lua.eval("return tokenizer.tokens_without_comments(tokenizer.tokenize('/* a */ SELECT x -- b'))")
    assert got == ["SELECT", "x"]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = 1", "SELECT * FROM t WHERE a = 1 "),
        ("SELECT COUNT(*) FROM t /* gone */", "SELECT COUNT( * ) FROM t "),
        ("SELECT 'it''s'", "SELECT 'it''s' "),
        (r"SELECT 'it\'s', 'a\\'", r"SELECT 'it\'s' , 'a\\' "),
        ('SELECT "say \\"hi\\""', "SELECT 'say \\\"hi\\\"' "),
        ('SELECT "it\'s"', "SELECT 'it''s' "),
        # names that needed backticks get them back; plain names and variables do not
        ("SELECT `order`, `my col`, `a``b`, `x` FROM `t`", "SELECT `order` , `my col` , `a``b` , x FROM t "),
        ("SELECT @a, @@session.sql_mode", "SELECT @a , @@session . sql_mode "),
        ("SELECT /*!40001 SQL_NO_CACHE */ 1", "SELECT /*!40001 SQL_NO_CACHE */ 1 "),
    ],
)
def test_tokens_to_query_rebuilds_sql(lua: Lua, sql: str, expected: str) -> None:
    assert to_query(lua, sql) == expected


def test_tokens_to_query_takes_a_range(lua: Lua) -> None:
    # tokens: SELECT a FROM t WHERE b = 1
    assert to_query(lua, "SELECT a FROM t WHERE b = 1", 2, 4) == "a FROM t "
    assert to_query(lua, "SELECT a FROM t WHERE b = 1", 5) == "WHERE b = 1 "


_text = st.text(alphabet="ab'\"\\ \n%_`", max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_text, quote=st.sampled_from(["'", '"']))
def test_rebuilt_strings_tokenize_to_the_same_text(lua: Lua, value: str, quote: str) -> None:
    # a string literal as a client would write it: the quote doubled, backslashes escaped
    literal = quote + value.replace("\\", "\\\\").replace(quote, quote + quote) + quote
    sql = f"SELECT {literal} FROM t"
    original = tokens(lua, sql)
    rebuilt = to_query(lua, sql)
    assert tokens(lua, rebuilt) == original
