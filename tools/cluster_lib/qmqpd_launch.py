"""Run ``serve_qmqpd`` as a daemon until SIGTERM: the lab's stand-in for a missing ``qldap qmqpd`` command.

Usage: ``python -m cluster_lib.qmqpd_launch ROOT HOST PORT``; prints
``qldap qmqpd: listening on HOST:PORT`` on stderr once the socket is bound.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

from qldap.remote.qmqpd import serve_qmqpd


async def _serve(root: str, host: str, port: int) -> None:
    listener, injector = await serve_qmqpd(root, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stderr.write(f"qldap qmqpd: listening on {host}:{port}\n")
    sys.stderr.flush()
    try:
        await stop.wait()
    finally:
        listener.close()
        await listener.wait_closed()
        injector.close()


def main(argv: Sequence[str]) -> int:
    """Serve until SIGTERM; 0, or 2 on a usage error."""
    if len(argv) != 3 or not argv[2].isdigit():
        sys.stderr.write("usage: python -m cluster_lib.qmqpd_launch ROOT HOST PORT\n")
        return 2
    asyncio.run(_serve(argv[0], argv[1], int(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
