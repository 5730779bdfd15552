"""The digest and slow-log tests reuse the proxy tests' fixtures (a chassis in front of the test MariaDB)."""

from tests.proxy.conftest import start_proxy

__all__ = ["start_proxy"]
