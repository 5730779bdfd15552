"""First run: how chassis is installed, and the demo's environment is a user's, not the tests'."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_distribution_has_a_name_of_its_own_and_the_chassis_command() -> None:
    dist = importlib.metadata.distribution("mysql-chassis")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"chassis": "chassis.cli:main"}
    # "chassis" on PyPI is an unrelated project: ours must not install under its name
    assert 'name = "mysql-chassis"' in (ROOT / "pyproject.toml").read_text()


def test_the_readme_says_how_to_install_before_it_runs_chassis() -> None:
    readme = (ROOT / "README.md").read_text()
    install = readme.index("pip install .")
    assert install < readme.index("chassis --plugins=") and install < readme.index("chassis --help")


@pytest.mark.timeout(600)
def test_the_demo_environment_has_chassis_but_no_test_tools(tmp_path: Path) -> None:
    venv = tmp_path / "demo"
    subprocess.run(["bash", "-c", ". scripts/lib/setup.sh && ensure_demo_venv"], cwd=ROOT,
                   env={**os.environ, "DEMO_VENV": str(venv)}, check=True, capture_output=True)
    help_text = subprocess.run([str(venv / "bin" / "chassis"), "--help"], check=True,
                               capture_output=True, text=True).stdout
    assert "proxy options" in help_text and "admin options" in help_text
    assert "echo" not in help_text  # the test plugin is not installed there
    for module in ("pytest", "chassis_echo", "pymysql", "hypothesis"):
        found = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {module}"],
                               capture_output=True)
        assert found.returncode != 0, f"{module} is installed in the demo's environment"
    assert "ensure_demo_venv" in (ROOT / "scripts" / "demo").read_text()
