"""A sans-IO codec for the MySQL client/server protocol: bytes in, packets out, no I/O."""
