"""Fixtures for the process tests: real chassis processes with the echo plugin.

``chassis_factory`` lives in :mod:`tests.support.chassis_proc`; another suite gets it
the same way, by importing it into its own conftest.py.
"""

from __future__ import annotations

from tests.support.chassis_proc import chassis_factory

__all__ = ["chassis_factory"]
