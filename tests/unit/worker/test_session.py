"""The worker's side of sessions: ``Session``, ``ctx.session`` and ``AdapterService.end_sessions``.

Over the wire (both transports) in ``tests/unit/grpc/test_sessions.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from snakepit._wire._session import MetadataError, decode_metadata, encode_metadata
from snakepit.worker import Context, Session
from snakepit.worker import _context as context_module
from snakepit.worker._service import AdapterService
from tests.unit.grpc._session_adapters import AsyncSessionEnds, NoHook, SyncSessionEnds

pytestmark = pytest.mark.anyio
anyio_backends = ("asyncio",)

METADATA = {"user": "ada", "tags": [1, 2], "nested": {"k": "v"}}


def context(session: Session | None = None) -> Context:
    return Context(
        request_id=1,
        session_id="" if session is None else session.session_id,
        deadline=None,
        logger=logging.getLogger("t"),
        _session=session,
    )


class TestSession:
    def test_id_and_metadata(self) -> None:
        session = Session("s-1", encode_metadata(METADATA))
        assert session.session_id == "s-1"
        assert session.metadata == METADATA
        assert repr(session) == "Session('s-1')"

    def test_without_metadata_it_is_empty(self) -> None:
        assert Session("s").metadata == {}

    def test_from_a_mapping_it_holds_a_copy(self) -> None:
        given = {"tags": [1]}
        session = Session("s", given)
        given["tags"].append(2)
        assert session.metadata == {"tags": [1]}

    def test_metadata_is_decoded_on_first_read_only(self, monkeypatch: pytest.MonkeyPatch) -> None:
        decoded: list[bytes] = []
        real = decode_metadata

        def counting(data: bytes) -> dict[str, Any]:
            decoded.append(data)
            return real(data)

        monkeypatch.setattr(context_module, "decode_metadata", counting)
        session = Session("s", b'{"a":1}')
        assert decoded == []  # a call that never reads it pays nothing
        first = session.metadata
        assert session.metadata is first
        assert decoded == [b'{"a":1}']

    def test_bad_metadata_raises_on_read_naming_the_field(self) -> None:
        session = Session("s", b"{bad")  # not decoded yet: no error
        assert session.session_id == "s"
        with pytest.raises(MetadataError, match="session_metadata"):
            session.metadata  # noqa: B018

    def test_read_only(self) -> None:
        session = Session("s", encode_metadata(METADATA))
        with pytest.raises(TypeError):
            session.metadata["user"] = "bob"  # type: ignore[index]
        with pytest.raises(AttributeError):
            session.session_id = "t"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            session.metadata = {}  # type: ignore[misc]
        with pytest.raises(AttributeError):
            session.other = 1  # type: ignore[attr-defined]

    def test_nested_values_are_this_sessions_own_copies(self) -> None:
        data = encode_metadata(METADATA)
        session = Session("s", data)
        session.metadata["tags"].append(3)
        session.metadata["nested"]["k"] = "changed"
        assert Session("s", data).metadata == METADATA
        assert METADATA == {"user": "ada", "tags": [1, 2], "nested": {"k": "v"}}


class TestContextSession:
    def test_none_outside_a_session(self) -> None:
        ctx = context()
        assert ctx.session is None
        assert ctx.session_id == ""

    def test_the_calls_session(self) -> None:
        session = Session("s-1")
        ctx = context(session)
        assert ctx.session is session
        assert ctx.session_id == "s-1"

    def test_read_only(self) -> None:
        ctx = context()
        with pytest.raises(AttributeError):
            ctx.session = Session("s")  # type: ignore[misc]


@pytest.fixture
async def service() -> AsyncIterator[Any]:
    made: list[AdapterService] = []

    def make(adapter: Any) -> AdapterService:
        adapter.setup()
        made.append(AdapterService(adapter, adapter_path="t:T", worker_id="w"))
        return made[-1]

    yield make
    for service in made:
        await service.aclose()


class TestEndSessions:
    """``AdapterService.end_sessions``: the hooks, in order, in a task the service owns."""

    @pytest.mark.parametrize("cls", [SyncSessionEnds, AsyncSessionEnds])
    async def test_in_order_and_waited_for_by_wait_idle(self, service: Any, cls: type) -> None:
        adapter = cls()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["a", "b"])
        svc.end_sessions(["c"])
        assert svc.ending_sessions == 3
        await svc.wait_idle()
        assert adapter.ended == ["a", "b", "c"]
        assert svc.ending_sessions == 0

    async def test_no_hook_costs_nothing(self, service: Any) -> None:
        svc: AdapterService = service(NoHook())
        svc.end_sessions(["a"])
        assert svc.ending_sessions == 0

    async def test_after_close_ids_are_ignored(self, service: Any) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        await svc.aclose()
        svc.end_sessions(["a"])
        assert svc.ending_sessions == 0
        await svc.wait_idle()
        assert adapter.ended == []

    async def test_aclose_cancels_a_running_hook_and_drops_the_rest(self, service: Any) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["hang", "after"])
        await adapter.started.wait()
        await svc.aclose()
        assert adapter.cancelled == ["hang"]
        assert adapter.ended == ["hang"]
        assert svc.ending_sessions == 0

    async def test_aclose_before_the_hooks_task_started(self, service: Any) -> None:
        adapter = AsyncSessionEnds()
        svc: AdapterService = service(adapter)
        svc.end_sessions(["a"])
        await svc.aclose()
        await svc.wait_idle()
        assert adapter.ended == []
        assert svc.ending_sessions == 0

    async def test_a_base_exception_from_a_sync_hook_is_logged_too(
        self, service: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Exits(SyncSessionEnds):
            def on_session_end(self, session_id: str) -> None:
                super().on_session_end(session_id)
                raise SystemExit(3)

        adapter = Exits()
        svc: AdapterService = service(adapter)
        with caplog.at_level(logging.ERROR, logger="snakepit.worker"):
            svc.end_sessions(["a", "b"])
            await svc.wait_idle()
        assert adapter.ended == ["a", "b"]
        assert [r.getMessage() for r in caplog.records] == [
            "on_session_end('a') raised SystemExit: 3",
            "on_session_end('b') raised SystemExit: 3",
        ]
