"""Control files: the one-setting-per-file configuration under ROOT/control."""
