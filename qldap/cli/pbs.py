"""Console entry points ``pbsadd`` and ``pbscheck`` (pbsadd(8) and pbscheck(8)).

``pbsadd [subprogram args...]`` — after a POP login: send one Add for ``$TCPREMOTEIP`` to every
server, then exec the subprogram (or exit 0).  Fatal errors go to stderr, exit 1, and the
subprogram is *not* run.

``pbscheck subprogram [args...]`` — before the SMTP daemon: ask the servers, set ``RELAYCLIENT`` and
the pbsenv variables on a hit, exec the daemon.  Its stdout is the SMTP client's connection, so its
fatal errors are SMTP replies (``554 … (#5.3.5)``), exit 1.  ``NOPBS`` set → both exec at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping, Sequence

from qldap.control.files import ControlDir, find_root
from qldap.errors import ConfigError
from qldap.pbs.client import add_datagram, granted, query, send_add
from qldap.pbs.config import PbsConfig, PbsRole, SecretTooLong, TooManyEnvRules, load_config
from qldap.pbs.packets import pack_address

USAGE_REPLY = "554 pop before smtp subprogram uncorrectly installed (#5.3.5)\r\n"
CONTROLS_REPLY = "554 unable to read controls (#5.3.5)\r\n"
TOO_MANY_REPLY = "554 to many additional environments defined (#5.3.5)\r\n"
REMOTEIP_REPLY = "554 unable to read $TCPREMOTEIP (#5.3.5)\r\n"
EXEC_REPLY = "554 unable to start smtp daemon (#5.3.5)\r\n"


def _log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _exec(argv: Sequence[str], environ: MutableMapping[str, str]) -> None:
    """Replace the process with *argv*; returns only when the exec failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], list(argv), dict(environ))
    except OSError:
        return


def _client_config(prog: str) -> PbsConfig | str:
    """The client configuration, or the reason it cannot be read (for the fatal line)."""
    try:
        return load_config(ControlDir(find_root()), PbsRole.CLIENT)
    except SecretTooLong:
        return "control/pbssecret is to long"
    except TooManyEnvRules:
        return "control/pbsenvs has to many entries"
    except ConfigError as exc:
        _log(f"{prog}: {exc}")
        return "unable to read controls"


def pbsadd_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pbsadd``."""
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ
    if "NOPBS" not in environ:
        cfg = _client_config("pbsadd")
        if isinstance(cfg, str):
            _log(f"pbsadd {cfg}")
            return 1
        datagram = add_datagram(cfg, environ.get("TCPREMOTEIP", ""), environ, _log)
        if datagram is None:
            _log("pbsadd unable to read $TCPREMOTEIP")
            return 1
        send_add(cfg, datagram, _log)
    if not args:
        return 0
    _exec(args, environ)
    _log(f"pbsadd unable to run {args[0]}")
    return 1


def _reply(text: str) -> int:
    """Write an SMTP reply to the client (stdout) and the log; pbscheck's fatal exit is 1."""
    sys.stdout.write(text)
    sys.stdout.flush()
    _log(f"pbscheck: {text.rstrip()}")
    return 1


def pbscheck_main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``pbscheck``."""
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ
    if not args:
        return _reply(USAGE_REPLY)
    if "NOPBS" not in environ:
        cfg = _client_config("pbscheck")
        if isinstance(cfg, str):
            return _reply(TOO_MANY_REPLY if "pbsenvs" in cfg else CONTROLS_REPLY)
        ip = environ.get("TCPREMOTEIP", "")
        if pack_address(ip) is None:
            return _reply(REMOTEIP_REPLY)
        try:
            answer = query(cfg, ip, log=_log)
        except OSError as exc:
            _log(f"pbscheck: warning: {exc.strerror or exc}")
            answer = None
        environ.update(granted(answer, cfg))
    _exec(args, environ)
    return _reply(EXEC_REPLY)
