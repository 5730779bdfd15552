"""Exceptions the chassis turns into clear messages and exit codes."""


class ChassisError(Exception):
    """A problem the user can fix; its message says what to do. Exit code 1."""

    exit_code = 1


class ConfigError(ChassisError):
    """Bad options or defaults-file. Exit code 2, like click's usage errors."""

    exit_code = 2


class StartupError(ChassisError):
    """A plugin could not start (``apply_config`` or ``chassis_serve`` failed).

    A worker that fails this way is never restarted by the angel: the same
    configuration would fail again.
    """

    exit_code = 3
