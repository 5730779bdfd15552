"""The plugin author's reference stays whole: every hook documented, shown and exercised."""

from __future__ import annotations

import inspect
from pathlib import Path

import chassis_echo
import pytest

from chassis import hookspecs

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(name for name, fn in vars(hookspecs).items()
               if name.startswith("chassis_") and inspect.isfunction(fn))


def test_there_are_hooks() -> None:
    assert {"chassis_add_options", "chassis_apply_config", "chassis_serve", "chassis_stop",
            "chassis_control", "chassis_shutdown"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_docstring(hook: str) -> None:
    doc = inspect.getdoc(getattr(hookspecs, hook))
    assert doc and len(doc) > 40, f"{hook} needs a docstring that plugin authors can read"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_in_the_plugin_guide(hook: str) -> None:
    assert hook in (ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("hook", HOOKS)
def test_the_example_plugin_implements_every_hook_with_its_signature(hook: str) -> None:
    impl = getattr(chassis_echo, hook)
    spec = inspect.signature(getattr(hookspecs, hook))
    assert list(inspect.signature(impl).parameters) == list(spec.parameters)
