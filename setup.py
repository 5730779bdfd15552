"""The one compiled part of chassis: the relay legs' hot path (plugins/chassis_proxy/_relay.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler and
Python's headers (Debian: build-essential python3-dev) pip still installs chassis, and
relay.py's reference classes do the same work, more slowly.
"""

from setuptools import Extension, setup

setup(ext_modules=[
    Extension("chassis_proxy._relay", ["plugins/chassis_proxy/_relay.c"], optional=True,
              extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                  "-Wno-missing-field-initializers"]),
])
