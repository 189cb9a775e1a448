"""A model-based test of SessionStore: random steps on trio's MockClock, against a model.

Hypothesis drives a real store (memory backend, through a blocking portal)
with creates (explicit or chosen ids, TTLs, up to ``max_sessions``), gets,
touches, pins, deletes, lists and clock jumps; a dict of records predicts
each reply. After every step the backend holds the model's sessions, record
for record, plus only sessions the model says expired and no step has met
since; ``on_end`` was called once for each session that ended, with its
reason. The sweep runs on its derived timer, or (in most runs) never, so
that the steps themselves must end what expired. The clock moves only in
the ``advance`` (to a session's expiry, or just past it) and ``wait`` steps,
in halves of a second: expiry falls exactly on its boundary too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Final

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from trio.testing import MockClock

from snakepit.errors import SessionExists, SessionLimitReached, SessionNotFound
from snakepit.session import (
    EndReason,
    SessionRecord,
    SessionStore,
    SessionStoreConfig,
    SessionStoreRef,
)
from snakepit.testing import GenServerMachine
from tests._budget import THOROUGH

MAX_SESSIONS: Final = 3
EXPLICIT_IDS: Final = ("a", "b", "c")
TTLS: Final = (None, 1.0, 2.5, 5.0)
JUMPS: Final = (0.5, 1.0, 2.5)
#: A sweep interval no run reaches: sessions end only when used, listed or counted.
NO_SWEEP: Final = 1e6
#: Jumps to the next deadline only when every task waited this long for real: a hang guard.
HANG_GUARD: Final = 10.0

SETTINGS: Final = settings(max_examples=10 * THOROUGH, stateful_step_count=20, deadline=None)


class SessionStoreMachine(GenServerMachine):
    backend: ClassVar[str] = "trio"
    clock: ClassVar[MockClock] = MockClock(autojump_threshold=HANG_GUARD)
    backend_options: ClassVar[dict[str, Any] | None] = {"clock": clock}

    @initialize(sweep=st.sampled_from([NO_SWEEP, None, NO_SWEEP]))
    def boot(self, sweep: float | None) -> None:
        self.ended: list[tuple[str, EndReason]] = []
        config = SessionStoreConfig(
            max_sessions=MAX_SESSIONS,
            sweep_interval=sweep,
            on_end=lambda rec, why: self.ended.append((rec.session_id, why)),
            clock=anyio.current_time,  # the MockClock's
        )
        self.memory = config.backend
        self.store: SessionStoreRef = self.enter(SessionStore.running(config))
        self.now: float = self.call(anyio.current_time)
        self.live: dict[str, SessionRecord] = {}
        self.model_ended: list[tuple[str, EndReason]] = []
        #: Every id the store ever gave out, plus the explicit ones and one never used.
        self.ids: list[str] = [*EXPLICIT_IDS, "never"]

    def _draw_id(self, data: st.DataObject) -> str:
        # Mostly a session that lives or has just ended: where the rules are.
        recent = [*self.live, *(i for i, _ in self.model_ended[-2:])]
        ids = st.sampled_from(self.ids)
        return data.draw(st.sampled_from(recent) | ids if recent else ids, label="session")

    def _end(self, session_id: str, why: EndReason) -> None:
        del self.live[session_id]
        self.model_ended.append((session_id, why))

    @rule(
        session_id=st.sampled_from(EXPLICIT_IDS) | st.none(),
        ttl=st.sampled_from(TTLS),
        n=st.integers(0, 9),
    )
    def create(self, session_id: str | None, ttl: float | None, n: int) -> None:
        create = self.store.create
        if session_id is not None and session_id in self.live:
            with pytest.raises(SessionExists):
                self.call(lambda: create(session_id, ttl=ttl, metadata={"n": n}))
        elif len(self.live) >= MAX_SESSIONS:
            with pytest.raises(SessionLimitReached):
                self.call(lambda: create(session_id, ttl=ttl, metadata={"n": n}))
        else:
            made = self.call(lambda: create(session_id, ttl=ttl, metadata={"n": n}))
            expected = SessionRecord(
                made.session_id, self.now, self.now, ttl, metadata={"n": n}, affinity="hint"
            )
            assert made == expected
            if session_id is None:
                assert made.session_id not in self.ids
                self.ids.append(made.session_id)
            self.live[made.session_id] = made

    @precondition(lambda self: self.live or self.model_ended)
    @rule(
        data=st.data(),
        op=st.sampled_from(["get", "touch", "pin", "unpin", "pin_if_w1", "pin_if_none"]),
    )
    def use(self, data: st.DataObject, op: str) -> None:
        session_id = self._draw_id(data)
        store = self.store
        calls = {
            "get": lambda: store.get(session_id),
            "touch": lambda: store.touch(session_id),
            "pin": lambda: store.pin(session_id, "w1"),
            "unpin": lambda: store.pin(session_id, None),
            # Compare-and-set pins (a pool's first call of a session): written
            # only if the session is pinned to that now.
            "pin_if_w1": lambda: store.pin(session_id, "w2", only_if_pinned_to="w1"),
            "pin_if_none": lambda: store.pin(session_id, "w3", only_if_pinned_to=None),
        }
        if session_id not in self.live:
            with pytest.raises(SessionNotFound):
                self.call(calls[op])
            return
        record = self.live[session_id]
        if op == "touch":
            record = replace(record, last_used=self.now)
        elif op in ("pin", "unpin"):
            record = replace(record, worker_id="w1" if op == "pin" else None)
        elif op == "pin_if_w1" and record.worker_id == "w1":
            record = replace(record, worker_id="w2")
        elif op == "pin_if_none" and record.worker_id is None:
            record = replace(record, worker_id="w3")
        assert self.call(calls[op]) == record
        self.live[session_id] = record

    @precondition(lambda self: self.live or self.model_ended)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        session_id = self._draw_id(data)
        gone = self.call(self.store.delete, session_id)
        assert gone == self.live.get(session_id)
        if gone is not None:
            self._end(session_id, "deleted")

    @precondition(lambda self: any(r.ttl is not None for r in self.live.values()))
    @rule(data=st.data(), past=st.sampled_from((0.0, 0.5)))
    def advance(self, data: st.DataObject, past: float) -> None:
        # To the very expiry of a session (its boundary: expired), or just past it.
        expiring = sorted(i for i, r in self.live.items() if r.ttl is not None)
        record = self.live[data.draw(st.sampled_from(expiring), label="until")]
        assert record.expires_at is not None
        self._jump(record.expires_at - self.now + past)

    @rule(seconds=st.sampled_from(JUMPS))
    def wait(self, seconds: float) -> None:
        self._jump(seconds)

    def _jump(self, seconds: float) -> None:
        self.call(self.clock.jump, seconds)
        self.now += seconds
        for session_id, record in list(self.live.items()):
            expires_at = record.expires_at
            if expires_at is not None and expires_at <= self.now:
                self._end(session_id, "expired")

    @precondition(lambda self: self.live or self.model_ended)
    @rule()
    def list_and_count(self) -> None:
        # Both end what expired first: the store then holds exactly the model's sessions.
        records = self.call(self.store.list)
        assert records == sorted(self.live.values(), key=lambda r: (r.created_at, r.session_id))
        assert self.call(self.store.count) == len(self.live)

    @invariant()
    def store_matches_model(self) -> None:
        # Read the backend itself: a check through the store would end expired
        # sessions first and hide whether the steps do.
        async def snapshot() -> tuple[list[SessionRecord], float]:
            await anyio.wait_all_tasks_blocked()  # the sweep and on_end calls are done
            return await self.memory.records(), anyio.current_time()

        records, now = self.call(snapshot)
        assert now == self.now, "the MockClock moved by itself: a step hung"
        stored = {r.session_id: r for r in records}
        for session_id, record in self.live.items():
            assert stored.get(session_id) == record
        # What is stored beyond the model expired and was not used since: only a
        # sweep or an access will end it (and call on_end).
        unswept = [(i, "expired") for i in stored if i not in self.live]
        for session_id, _ in unswept:
            assert self.model_ended.count((session_id, "expired")) > self.ended.count(
                (session_id, "expired")
            )
        assert sorted(self.ended + unswept) == sorted(self.model_ended)


def test_session_store_follows_the_model() -> None:
    run_state_machine_as_test(SessionStoreMachine, settings=SETTINGS)
