"""The state table of qldap-queue(5) States walked over all 128 combinations of present files."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from qldap.queue.layout import SPLIT, QueueLayout, create_queue, current_user_ids
from qldap.queue.states import Part, State, classify, parts_of, scan, state_of
from tests.conftest import QRoot

COLUMNS = (Part.MESS, Part.INTD, Part.TODO, Part.INFO, Part.LOCAL, Part.REMOTE, Part.BOUNCE)
# The state table of qldap-queue(5), States, column for column: + present, - absent, ? either.
TABLE = {
    State.S1: "-------",
    State.S2: "+------",
    State.S3: "++-----",
    State.S4: "+?+???-",
    State.S5: "+--+???",
}


def matches(row: str, present: frozenset[Part]) -> bool:
    return all(
        mark == "?" or (mark == "+") == (part in present) for mark, part in zip(row, COLUMNS, strict=True)
    )


ALL = [
    frozenset(p for p, on in zip(COLUMNS, bits, strict=True) if on)
    for bits in itertools.product((0, 1), repeat=7)
]


@pytest.mark.parametrize("present", ALL, ids=lambda p: "+".join(sorted(x.value for x in p)) or "none")
def test_classify_follows_the_table(present: frozenset[Part]) -> None:
    rows = [state for state, row in TABLE.items() if matches(row, present)]
    assert len(rows) <= 1  # the table's rows do not overlap
    assert classify(present) is (rows[0] if rows else State.INCONSISTENT)


def test_table_examples() -> None:
    assert classify([]) is State.S1
    assert classify([Part.MESS]) is State.S2
    assert classify([Part.MESS, Part.INTD]) is State.S3
    assert classify([Part.MESS, Part.INTD, Part.TODO]) is State.S4
    assert classify([Part.MESS, Part.TODO, Part.INFO, Part.LOCAL]) is State.S4  # preprocessing crashed
    assert classify([Part.MESS, Part.INFO, Part.REMOTE, Part.BOUNCE]) is State.S5
    assert classify([Part.TODO]) is State.INCONSISTENT
    assert classify([Part.MESS, Part.LOCAL]) is State.INCONSISTENT


@pytest.fixture
def layout(qroot: QRoot) -> QueueLayout:
    return create_queue(qroot.path, current_user_ids())


def put(path: str, data: bytes = b"") -> None:
    Path(path).write_bytes(data)


def test_scan_and_state_of_on_disk(layout: QueueLayout) -> None:
    # 5: S2, 29: S3 (29 mod 23 = 6), 47: S4, 100: S5 with both channels and a bounce, 7: todo only
    put(layout.mess(5))
    put(layout.mess(29))
    put(layout.intd(29))
    put(layout.mess(47))
    put(layout.intd(47))
    put(layout.todo(47))
    for part in (layout.mess, layout.info, layout.local, layout.remote, layout.bounce):
        put(part(100))
    put(layout.todo(7))
    put(layout.pid("1.2.3"))  # scratch files are not messages
    assert scan(layout) == {
        5: State.S2,
        7: State.INCONSISTENT,
        29: State.S3,
        47: State.S4,
        100: State.S5,
    }
    assert parts_of(layout, 100) == {Part.MESS, Part.INFO, Part.LOCAL, Part.REMOTE, Part.BOUNCE}
    assert state_of(layout, 3) is State.S1
    assert os.path.dirname(layout.mess(29)).endswith(f"/mess/{29 % SPLIT}")


def test_scan_ignores_files_in_the_wrong_split(layout: QueueLayout) -> None:
    put(f"{layout.dir('mess')}/0/5")  # 5 belongs in mess/5
    assert scan(layout) == {}
