"""Creating qmail roots: `qldap init` and the demo directory."""
