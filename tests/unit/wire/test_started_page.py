"""The started page (snakepit/_wire/_started.py): which calls a worker began."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from snakepit._wire._started import (
    NO_PAGE_ID,
    SIZE,
    SLOTS,
    StartedPage,
    attach_started_page,
    no_page_notice,
)


@pytest.fixture
def page(tmp_path: Path) -> StartedPage:
    return StartedPage.create(str(tmp_path), ".w0.sock-")


class TestThePage:
    def test_an_unsigned_page_says_nothing_started(self, page: StartedPage) -> None:
        # The worker had not read the connection's first frame: nor any call after it.
        assert page.started(1) is False
        page.seal()
        assert page.started(1) is False

    def test_a_refused_page_cannot_say(self, page: StartedPage) -> None:
        # The worker said it could not map it: every call counts as started.
        page.refuse()
        assert page.started(1) is None
        page.seal()
        assert page.started(1) is None

    def test_the_notice_of_a_worker_without_a_page_is_a_reply_to_no_call(self) -> None:
        (response,) = no_page_notice().responses
        assert response.request_id == NO_PAGE_ID == 0

    def test_a_marked_call_started_and_the_others_did_not(self, page: StartedPage) -> None:
        worker = StartedPage.attach(page.path)
        for rid in (1, 2, SLOTS + 5):
            worker.mark(rid)
        assert page.started(1) is True
        assert page.started(2) is True
        assert page.started(SLOTS + 5) is True
        # Its slot holds a later id: it may have started before (found by a
        # review: a call running while 4096 later ones started was judged
        # unstarted, and ran twice).
        assert page.started(5) is None
        assert page.started(3) is False
        worker.close()
        page.close()

    def test_an_earlier_call_starting_late_does_not_hide_a_later_one(
        self, page: StartedPage
    ) -> None:
        worker = StartedPage.attach(page.path)
        worker.mark(SLOTS + 7)
        worker.mark(7)  # it waited long (a session's end), same remainder
        assert page.started(SLOTS + 7) is True
        assert page.started(7) is None  # cannot say: counted as started
        worker.close()
        page.close()

    def test_a_sealed_page_keeps_what_it_said_and_holds_no_file(
        self, page: StartedPage, tmp_path: Path
    ) -> None:
        fds = set(os.listdir("/proc/self/fd"))
        worker = StartedPage.attach(page.path)
        worker.mark(7)
        worker.close()
        page.seal()
        assert page.started(7) is True
        assert page.started(8) is False
        assert list(tmp_path.iterdir()) == []  # removed
        assert set(os.listdir("/proc/self/fd")) <= fds  # unmapped: no fd left
        page.seal()  # idempotent
        page.close()
        assert page.started(7) is True

    def test_a_closed_page_cannot_say_and_a_mark_after_close_is_harmless(
        self, page: StartedPage, tmp_path: Path
    ) -> None:
        worker = StartedPage.attach(page.path)
        worker.mark(1)
        page.close()
        assert page.started(1) is None
        assert list(tmp_path.iterdir()) == []
        worker.close()
        worker.mark(2)  # a tool thread racing the connection's end
        page.close()  # idempotent

    def test_the_file_is_owner_only_and_of_the_page_size(self, page: StartedPage) -> None:
        status = os.stat(page.path)
        assert status.st_mode & 0o077 == 0
        assert status.st_size == SIZE
        page.close()

    def test_a_file_that_is_not_a_page_is_refused(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        other = tmp_path / "other"
        other.write_bytes(b"x" * 10)
        with pytest.raises(OSError, match="not a started page"):
            StartedPage.attach(str(other))
        assert attach_started_page(str(other)) is None
        assert "cannot map the host's started page" in caplog.text

    def test_a_page_gone_already_is_no_warning(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        assert attach_started_page(str(tmp_path / "gone")) is None
        assert "cannot map" not in caplog.text

    def test_a_symlink_is_not_followed(self, page: StartedPage, tmp_path: Path) -> None:
        link = tmp_path / "link"
        link.symlink_to(page.path)
        with pytest.raises(OSError, match="Too many levels of symbolic links"):
            StartedPage.attach(str(link))
        page.close()
