"""A call's cancel_event (snakepit.worker._context.cancel_event): a threading.Event made lazily."""

from __future__ import annotations

import threading

from snakepit.worker._context import cancel_event


def test_it_is_a_clear_threading_event() -> None:
    event = cancel_event()
    assert isinstance(event, threading.Event)
    assert not event.is_set()
    assert event.wait(0) is False


def test_set_wakes_a_waiter_on_another_thread_and_clear_resets_it() -> None:
    event = cancel_event()
    seen: list[bool] = []
    waiting = threading.Thread(target=lambda: seen.append(event.wait(30)))
    waiting.start()
    event.set()
    waiting.join(30)
    assert seen == [True]
    assert event.is_set()
    assert event.wait() is True
    event.clear()
    assert not event.is_set()
    assert event.wait(0) is False


def test_many_threads_racing_for_the_first_use_share_one_condition() -> None:
    event = cancel_event()
    start = threading.Barrier(8)
    seen: list[bool] = []

    def wait() -> None:
        start.wait()
        seen.append(event.wait(30))

    threads = [threading.Thread(target=wait) for _ in range(7)]
    for thread in threads:
        thread.start()
    start.wait()
    event.set()
    for thread in threads:
        thread.join(30)
    assert seen == [True] * 7
