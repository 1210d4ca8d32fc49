"""``tools/cluster up|test|down [--dir D]``: drive the three-node lab; JSON on stdout, errors on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

DEFAULT_DIR = Path("/tmp/qldap-cluster")


def main(argv: Sequence[str] | None = None) -> int:
    """0 on success (for ``test``: every scenario passed), 1 on failure, 2 on bad usage/environment."""
    p = argparse.ArgumentParser(prog="tools/cluster", description="three-node qldap cluster lab")
    p.add_argument("command", choices=("up", "test", "down"))
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"lab directory (default {DEFAULT_DIR})")
    p.add_argument("--keep-files", action="store_true", help="down: keep DIR (logs, mailboxes)")
    args = p.parse_args(argv)

    from cluster_lib import lab, netns, scenarios

    reason = netns.ip_available()
    if reason is not None:
        sys.stderr.write(f"tools/cluster: cannot run: {reason}\n")
        return 2
    the_lab = lab.Lab(args.dir.resolve())
    try:
        if args.command == "up":
            out: dict[str, object] = lab.up(the_lab)
        elif args.command == "down":
            out = lab.down(the_lab, remove_files=not args.keep_files)
        else:
            out = scenarios.run_all(the_lab)
    except Exception as exc:  # a command-line tool reports any failure and exits 1
        sys.stderr.write(f"tools/cluster {args.command}: {type(exc).__name__}: {exc}\n")
        return 1
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    if args.command == "test":
        return 0 if out.get("ok") else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
