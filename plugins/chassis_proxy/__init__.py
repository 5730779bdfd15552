"""The proxy plugin: a MySQL proxy with MySQL Proxy 0.8's Lua hooks."""
