"""The shared shape of every console script: ``main(argv) -> int`` and ``PROG: fatal: …`` on stderr.

Why one wrapper: qmail's tools share an exit-code contract (0 ok, 100 permanent, 111 temporary) and an
error-line shape that scripts parse; the catch-all that turns an unexpected exception into a logged
exit 111 lives only here, so library code never calls ``sys.exit`` or prints.
"""

from __future__ import annotations

import ctypes
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence

from qldap.errors import ConfigError, PermanentFailure, TemporaryFailure
from qldap.exitcodes import ExitCode
from qldap.metrics import ENV as METRICS_ENV
from qldap.metrics import Endpoint, QueueFigures, start_from_env

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
STEADY_MMAP_THRESHOLD = 1 << 20


def steady_malloc(threshold: int = STEADY_MMAP_THRESHOLD) -> bool:
    """Serve allocations below *threshold* from the heap, keeping up to twice that free before trimming.

    Why: asyncio reads every socket with ``recv(262144)``, so each read allocates 256 KiB and shrinks
    it to what arrived.  glibc maps blocks over 128 KiB with ``mmap``, the shrink is an ``mremap`` and
    the free an ``munmap``, plus a page fault on first touch: four kernel entries per read, and its
    adaptive threshold never learns, because the block it frees is the small shrunk one.  In ``qldap
    smtpd`` that was about five reads and fifteen such calls per accepted message (docs/benchmarks.md).
    With a fixed threshold the block comes from the heap and goes back to it.  glibc only; True when
    both settings were taken.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * threshold))


def fatal(prog: str, text: str) -> None:
    """Write ``PROG: fatal: TEXT`` to stderr."""
    sys.stderr.write(f"{prog}: fatal: {text}\n")
    sys.stderr.flush()


def run(prog: str, body: Callable[[Sequence[str]], int], argv: Sequence[str] | None = None) -> int:
    """Run *body* with qmail's error conventions and return its exit code.

    ConfigError and TemporaryFailure → 111; PermanentFailure → 100; anything unexpected is logged with
    its traceback and becomes 111 (temporary), never a silent success.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(args)
    except (ConfigError, TemporaryFailure) as exc:
        fatal(prog, str(exc))
        return ExitCode.TEMPORARY
    except PermanentFailure as exc:
        fatal(prog, str(exc))
        return ExitCode.PERMANENT
    except KeyboardInterrupt:
        return ExitCode.TEMPORARY
    except BrokenPipeError:
        return ExitCode.TEMPORARY
    except Exception:  # the one allowed catch-all: log and defer
        fatal(prog, "internal error")
        traceback.print_exc(file=sys.stderr)
        return ExitCode.TEMPORARY


def parse_root_args(args: Sequence[str]) -> str | None:
    """``--root DIR`` / ``--root=DIR`` (the only option of qmail-queue and qldap send); None if absent.

    Raises:
        ValueError: any other argument, or ``--root`` without a directory.
    """
    root: str | None = None
    it = iter(args)
    for arg in it:
        if arg == "--root":
            root = next(it, None)
            if root is None:
                raise ValueError("--root needs a directory")
        elif arg.startswith("--root="):
            root = arg.split("=", 1)[1]
        else:
            raise ValueError(f"unknown argument {arg!r}")
    return root


def start_metrics(
    prog: str,
    daemon: str,
    environ: Mapping[str, str],
    *,
    queue: Callable[[], QueueFigures] | None = None,
) -> Endpoint | None:
    """Start the daemon's Prometheus endpoint when ``$QLDAP_METRICS`` asks for one (docs/operations.md).

    Runs before the daemon opens its directory, so the directory's searches are timed.  Says
    ``PROG: metrics on HOST:PORT`` on stderr (the supervisor relays it; it is not a ready line).

    Raises:
        ConfigError: the address is not HOST:PORT or cannot be bound.
    """
    try:
        endpoint = start_from_env(daemon, environ, queue=queue)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"unable to serve metrics on {environ.get(METRICS_ENV)!r}: {exc}") from exc
    if endpoint is not None:
        shown = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        sys.stderr.write(f"{prog}: metrics on {shown}:{endpoint.port}\n")
        sys.stderr.flush()
    return endpoint
