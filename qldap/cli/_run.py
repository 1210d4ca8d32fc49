"""The shared shape of every console script: ``main(argv) -> int`` and ``PROG: fatal: …`` on stderr.

Why one wrapper: qmail's tools share an exit-code contract (0 ok, 100 permanent, 111 temporary) and an
error-line shape that scripts parse; the catch-all that turns an unexpected exception into a logged
exit 111 lives only here, so library code never calls ``sys.exit`` or prints.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Mapping, Sequence

from qldap.errors import ConfigError, PermanentFailure, TemporaryFailure
from qldap.exitcodes import ExitCode
from qldap.metrics import ENV as METRICS_ENV
from qldap.metrics import Endpoint, QueueFigures, start_from_env


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
