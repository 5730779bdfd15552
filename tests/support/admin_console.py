"""Ask a running chassis' admin console (the admin plugin) one statement."""

from __future__ import annotations

from typing import Any

import pymysql


def admin_rows(port: int, password: str, sql: str, user: str = "admin") -> list[tuple[Any, ...]]:
    """Every row of ``sql`` on a new admin-console connection (closed afterwards)."""
    conn = pymysql.connect(host="127.0.0.1", port=port, user=user, password=password,
                           connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()
