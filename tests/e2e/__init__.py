"""End-to-end helpers: real daemons on loopback sockets."""
