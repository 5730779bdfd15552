"""Fixtures for the proxy.* Lua library tests (the harness is in :mod:`tests.lualib.harness`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lualib.harness import EVAL, LOGGER, Env, Lua


@pytest.fixture
def env(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[Env]:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    e = Env(tmp_path, caplog)
    yield e
    for h in e.hosts:
        h.close()


@pytest.fixture
def lua(env: Env) -> Lua:
    """A connection of a host running the EVAL script (user app, default db shop)."""
    return env.connect(env.host(EVAL))
