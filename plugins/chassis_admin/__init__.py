"""The admin plugin: a MySQL-protocol console on its own port for operating the proxy."""
