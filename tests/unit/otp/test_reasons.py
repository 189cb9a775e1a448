"""Exit reasons (otp/_reasons.py): Shutdown with a detail is a normal exit, and how it travels.

A supervisor that gives up exits with ``Shutdown(ReachedMaxRestartIntensity)``: its transient
parent does not restart it, and its callers see the detail as the cause (issue #11, defect 12).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from snakepit.errors import ReachedMaxRestartIntensity, ServerExited
from snakepit.otp import (
    ChildExited,
    ChildSpec,
    GenServer,
    Shutdown,
    Stop,
    Supervisor,
    SupervisorSpec,
    exit_detail,
    is_abnormal,
    monitor,
)

from ._sup_helpers import Opts, Worker, cast_and_wait, drain, intensity_error

pytestmark = pytest.mark.anyio


class TestShutdownReason:
    def test_a_shutdown_with_a_detail_is_a_normal_exit(self) -> None:
        error = ReachedMaxRestartIntensity("sup", 3, 5.0)
        reason = Shutdown(error)
        assert not is_abnormal(reason)
        assert not is_abnormal("shutdown")
        assert is_abnormal("killed")
        assert exit_detail(reason) is error
        assert exit_detail("normal") == "normal"
        assert Shutdown("x") == Shutdown("x")
        assert Shutdown("shutdown") != "shutdown"  # type: ignore[comparison-overlap]
        assert str(reason).startswith("shutdown (ReachedMaxRestartIntensity: 'sup' reached")
        assert str(Shutdown("bye")) == "shutdown ('bye')"

    async def test_a_supervisor_that_gave_up_is_not_restarted_by_a_transient_parent(
        self,
    ) -> None:
        inner = SupervisorSpec([ChildSpec("w", Worker, arg=Opts("w"))], max_restarts=0)
        spec = SupervisorSpec([ChildSpec("inner", Supervisor, arg=inner, restart="transient")])
        with anyio.fail_after(5):
            async with Supervisor.running(spec) as sup:
                events = sup.subscribe()
                inner_ref = sup.child("inner")
                assert inner_ref is not None
                async with monitor(inner_ref) as down:
                    worker = inner_ref.child("w")  # type: ignore[attr-defined]
                    assert await cast_and_wait(worker) is not None
                    reason = await down.down()
                await sup.wait_stable()
                assert intensity_error(reason).supervisor is inner_ref
                assert sup.alive
                assert sup.child("inner") is None  # not restarted
                [info] = sup.which_children()
                assert info.last_exit == reason
                async with events:
                    exited = [e for e in drain(events)[0] if isinstance(e, ChildExited)]
                assert [(e.child_id, e.restarting) for e in exited] == [("inner", False)]

    async def test_a_caller_of_a_supervisor_that_gave_up_sees_the_detail_as_cause(
        self,
    ) -> None:
        spec = SupervisorSpec([ChildSpec("w", Worker, arg=Opts("w"))], max_restarts=0)
        async with anyio.create_task_group() as tg:
            sup = await Supervisor.start(tg, spec)
            async with monitor(sup) as down:
                await cast_and_wait(sup.child("w"))  # type: ignore[arg-type]
                await down.down()
            with pytest.raises(ServerExited) as info:
                await sup.sync()
        assert isinstance(info.value.__cause__, ReachedMaxRestartIntensity)
        assert "shutdown (ReachedMaxRestartIntensity" in str(info.value)

    async def test_stop_with_a_shutdown_reason_from_a_handler(self) -> None:
        class Leaver(GenServer[Any, Any, None]):
            async def handle_cast(self, message: Any, state: None) -> None:
                raise Stop(Shutdown(message))

        spec = SupervisorSpec([ChildSpec("l", Leaver, restart="transient")])
        async with Supervisor.running(spec) as sup:
            ref = sup.child("l")
            assert ref is not None
            async with monitor(ref) as down:
                ref.cast("done here")
                assert await down.down() == Shutdown("done here")
            await sup.wait_stable()
            assert sup.child("l") is None  # transient: a normal exit, no restart
