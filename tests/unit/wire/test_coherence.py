"""The coherence page: counters the host bumps and its workers read (snakepit._wire._coherence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snakepit._wire._coherence import (
    SLOTS,
    CoherencePage,
    page_path,
    session_slot,
    variable_slot,
)


def test_a_bump_on_the_host_is_seen_by_a_reader_of_the_same_file(tmp_path: Path) -> None:
    path = page_path(str(tmp_path / "bridge.sock"))
    host = CoherencePage.create(path)
    worker = CoherencePage.open(path)
    try:
        slot = variable_slot("s1", "x")
        assert worker.read(slot) == 0
        host.variables_written("s1", ["x", "y"])
        assert worker.read(slot) == 1
        assert worker.read(variable_slot("s1", "y")) == 1
        host.session_changed("s1")
        assert worker.read(session_slot("s1")) == 1
        assert not worker.writable
        assert (tmp_path / "bridge.sock.page").stat().st_mode & 0o777 == 0o600
    finally:
        worker.close()
        host.close()


def test_a_page_is_made_once_and_a_reader_refuses_what_is_not_one(tmp_path: Path) -> None:
    path = str(tmp_path / "p")
    CoherencePage.create(path).close()
    with pytest.raises(FileExistsError):
        CoherencePage.create(path)
    other = tmp_path / "other"
    other.write_bytes(b"not a page")
    with pytest.raises(OSError, match="not a coherence page"):
        CoherencePage.open(str(other))
    with pytest.raises(FileNotFoundError):
        CoherencePage.open(str(tmp_path / "missing"))


def test_slots_are_in_range_and_depend_on_both_the_session_and_the_name() -> None:
    slots = {variable_slot(f"s{i}", "x") for i in range(200)}
    assert all(0 <= s < SLOTS for s in slots)
    assert len(slots) > 190  # spread (a collision only costs a worker a round trip)
    assert variable_slot("s", "x") != variable_slot("s", "y")
    assert variable_slot("a\udcff", "x") >= 0  # any str a session id may be


def test_a_counter_wraps_instead_of_overflowing(tmp_path: Path) -> None:
    page = CoherencePage.create(str(tmp_path / "p"))
    try:
        page._map[0:8] = (2**64 - 1).to_bytes(8, "little")
        page.bump(0)
        assert page.read(0) == 0
    finally:
        page.close()
