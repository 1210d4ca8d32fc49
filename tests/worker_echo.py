"""A helper program for tests/test_workers.py: answers each request, or misbehaves on command.

``echo:X`` → ``X`` plus this helper's pid; ``die`` → exits at once without answering;
``sleep:S`` → answers after S seconds; ``env:NAME`` → the value of $NAME.
"""

from __future__ import annotations

import os
import sys
import time

from qldap.workers import serve


def handle(request: bytes) -> bytes:
    verb, _, arg = request.partition(b":")
    if verb == b"die":
        os._exit(3)
    if verb == b"sleep":
        time.sleep(float(arg))
        return b"slept"
    if verb == b"env":
        return os.environ.get(arg.decode(), "").encode()
    return arg + b" " + str(os.getpid()).encode()


if __name__ == "__main__":
    sys.exit(serve(handle))
