"""Password schemes (userPassword hashes): below both ``directory`` and ``auth``.

Why its own package: the directory compares a bind-less userPassword and the auth modules check
logins; if the schemes lived in ``auth``, ``directory`` would import upwards (docs/architecture.md).
"""
