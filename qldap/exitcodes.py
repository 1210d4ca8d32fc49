"""Exit codes are contracts between qmail programs; every documented code lives here."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """qmail's process exit statuses shared by every tool."""

    OK = 0
    USAGE = 1  # tools such as digest / qmail-ldaplookup: bad usage
    PERMANENT = 100
    TEMPORARY = 111
