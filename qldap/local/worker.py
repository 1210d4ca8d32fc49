"""The local-delivery helper: ``python -m qldap.local.worker --root ROOT``, one delivery at a time.

``qldap send`` runs up to ``concurrencylocal`` of these (qldap.workers) and hands each local delivery to
an idle one, as qmail-send hands them to qmail-lspawn (qmail-send(8), qmail-lspawn(8)).  Inside, the
delivery is exactly :meth:`LocalSpawner.deliver`: the directory lookup, the plan, the agent, forwards
injected into the queue, the K/Z/D report.  Each helper keeps its own directory connection and its own
injector; it reads the control files itself, so the manager's SIGHUP renews the helpers instead of
telling them anything.

Request: recipient, envelope sender and message path, NUL-separated (UTF-8, undecodable bytes kept as
surrogates).  Answer: the report letter followed by the report text.  A request that cannot be decoded
is answered with a ``Z`` report, so the recipient is retried and never lost.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from qldap.errors import DeliveryFailure
from qldap.local import creds
from qldap.local.spawn import LocalSpawner, Report
from qldap.logs import stamper
from qldap.queue.codes import QueueError
from qldap.queue.envelope import Envelope
from qldap.queue.inject import Injector, how_invoked
from qldap.queue.layout import resolve_ids
from qldap.workers import serve

MODULE = "qldap.local.worker"
_ENC = "utf-8"
_ERRORS = "surrogateescape"


def encode_request(recipient: str, sender: str, message: Path | str) -> bytes:
    """The frame :func:`decode_request` reads back."""
    fields = (recipient, sender, os.fspath(message))
    return b"\0".join(f.encode(_ENC, _ERRORS) for f in fields)


def decode_request(data: bytes) -> tuple[str, str, str]:
    """(recipient, sender, message path); raises ValueError for a malformed request."""
    parts = data.split(b"\0")
    if len(parts) != 3 or not parts[2]:
        raise ValueError("malformed delivery request")
    rcpt, sender, path = (p.decode(_ENC, _ERRORS) for p in parts)
    return rcpt, sender, path


def encode_report(report: Report) -> bytes:
    """Letter, then text."""
    return (report.letter + report.text).encode(_ENC, _ERRORS)


def decode_report(data: bytes) -> Report:
    """The helper's answer as a :class:`Report` (an empty answer is an unknown letter: the manager defers)."""
    text = data.decode(_ENC, _ERRORS)
    return Report(text[:1], text[1:])


def _log(line: str) -> None:
    """One ``write`` per line on stderr, shared with the manager (lines never interleave)."""
    stamp = _STAMP()
    try:
        os.write(2, (stamp + line + "\n").encode(_ENC, _ERRORS))
    except OSError:
        pass


_STAMP = stamper(os.environ)


def make_handler(root: Path) -> LocalSpawner:
    """The spawner a helper serves with; forwards are injected with this helper's own injector."""
    ids = resolve_ids()
    injector = Injector(root, workers=1, ids=ids)
    uid = os.getuid()
    how = how_invoked(uid, ids)

    def inject_bytes(data: bytes, sender: str, recipients: tuple[str, ...]) -> int:
        try:
            return injector.inject(data, Envelope(sender, recipients), how=how, uid=uid).qp
        except QueueError as exc:
            raise exc.failure() from None

    return LocalSpawner(root, inject_bytes, log=_log)


def handle_with(spawner: LocalSpawner, request: bytes) -> bytes:
    """One job: decode, deliver, encode; never raises for a delivery's outcome."""
    try:
        rcpt, sender, path = decode_request(request)
    except ValueError as exc:
        return encode_report(Report("Z", f"Temporary failure in qmail-lspawn: {exc}. (#4.3.0)"))
    try:
        return encode_report(spawner.deliver(rcpt, sender, Path(path)))
    except DeliveryFailure as exc:  # deliver() reports these itself; kept for safety
        return encode_report(Report(exc.letter, exc.text))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the helper (started by ``qldap send``, not by people)."""
    p = argparse.ArgumentParser(prog="python -m " + MODULE)
    p.add_argument("--root", required=True)
    args = p.parse_args(argv)
    creds.drop_groups()  # as the manager does: root's groups must not leak into deliveries made as users
    spawner = make_handler(Path(args.root))
    try:
        return serve(lambda request: handle_with(spawner, request))
    finally:
        spawner.reload()  # closes the directory connection


if __name__ == "__main__":
    sys.exit(main())
