"""A model-based test of Supervisor: random actions, checked against OTP's rules.

Hypothesis drives a real :class:`Supervisor` (through a blocking portal, on
asyncio and on trio) with random steps: kill a child, make it exit normally
or crash, add a child (whose ``init`` may fail), ``terminate_child``,
``restart_child``, ``delete_child``, misuse the API and, on trio, move the
clock. A small pure-Python model of OTP's supervisor (see :class:`Model`)
predicts each step, and after every step the test compares the two:

* the supervisor is alive, or dead with ``Shutdown(ReachedMaxRestartIntensity)``, exactly
  when the model says more than ``max_restarts`` restarts fell in the window;
* ``which_children()`` (ids in order, restart types, alive, generation) and
  ``count_children()``;
* ref identity: a child that was not restarted keeps the very same ref, a
  restarted one has a new ref (so the strategy hit exactly the right
  siblings), and no instance outside the children list is alive;
* the supervisor's events of the step, in order: exits with their
  ``restarting`` flag, the stops of the siblings (reverse start order), the
  restarts (start order), start failures, the intensity exit.

No sleeps: every step waits on a monitor's DOWN and ``wait_stable()``. On trio
the clock is a ``MockClock`` that only the ``advance_clock`` step moves, so
the restart window is exact; on asyncio the window is an hour, so it never
slides during a run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from trio.testing import MockClock

from snakepit.errors import (
    ChildNotFound,
    ChildStartError,
    ConfigError,
    DuplicateChild,
    ServerExited,
)
from snakepit.otp import (
    ChildCounts,
    ChildExited,
    ChildInfo,
    ChildSpec,
    ChildStarted,
    ChildStartFailed,
    ChildTerminated,
    ExitReason,
    GenServer,
    Restart,
    RestartIntensityReached,
    ServerRef,
    Stop,
    Strategy,
    Supervisor,
    SupervisorEvent,
    SupervisorRef,
    SupervisorSpec,
    monitor,
)
from tests._budget import THOROUGH

from ._sup_helpers import gave_up, intensity_error

RESTARTS: Final[tuple[Restart, ...]] = ("permanent", "transient", "temporary")
STRATEGIES: Final[tuple[Strategy, ...]] = ("one_for_one", "one_for_all", "rest_for_one")
MAX_CHILDREN: Final = 6
#: Deadline of every wait in a step. On trio it only matters through HANG_GUARD.
STEP_TIMEOUT: Final = 5.0
#: On asyncio the real clock runs: a window no run comes near, so it never slides.
REAL_CLOCK_WINDOW: Final = 3600.0
#: On trio, the restart windows and the clock steps. Whole seconds on both, so
#: runs land exactly on the window's boundary too, where a restart
#: max_seconds old still counts (supervisor.erl keeps R >= Now - Period; see
#: test_restart_exactly_max_seconds_old_still_counts).
MOCK_WINDOWS: Final = (0.5, 1.0, 2.0, 3.0, 4.5)
MOCK_JUMPS: Final = (1.0, 2.0, 3.0)
#: The MockClock jumps to the next deadline only after this many real seconds
#: with every task blocked, i.e. only when a step hangs (it then times out
#: instead of hanging the suite); the invariant checks the clock moved only
#: when the model moved it.
HANG_GUARD: Final = 10.0

SETTINGS: Final = settings(
    # SNAKEPIT_THOROUGH=1 runs 10x more (tests/_budget.py); the suite's budget is 30 s.
    max_examples=15 * THOROUGH,
    stateful_step_count=20,
    deadline=None,
)

#: One supervisor event, reduced to what the model predicts.
Event = tuple[object, ...]


class Boom(Exception):
    """What a worker raises when told to crash (or to fail its ``init``)."""


class Worker(GenServer[Any, Any, None]):
    """A child that exits the way its cast tells it to."""

    async def init(self, arg: Any) -> None:
        if arg == "fail":
            raise Boom("init failed")

    async def handle_cast(self, message: Any, state: None) -> None:
        if message == "crash":
            raise Boom("crash")
        if message == "stop_error":
            raise Stop(Boom("stop"))
        raise Stop(message)  # "normal" or "shutdown"


#: How a step makes a child exit -> whether OTP calls that exit abnormal.
ABNORMAL: Final[dict[str, bool]] = {
    "kill": True,
    "crash": True,
    "stop_error": True,
    "normal": False,
    "shutdown": False,
}


def reason_matches(how: str, reason: ExitReason) -> bool:
    """Whether ``reason`` is the exit reason the step ``how`` causes."""
    if how == "kill":
        return reason == "killed"
    if how in ("crash", "stop_error"):
        return isinstance(reason, Boom)
    return reason == how


# -- the model -----------------------------------------------------------------------


@dataclass
class ModelChild:
    id: str
    restart: Restart
    #: Generation of the current (or last) instance: its number of starts - 1.
    generation: int = 0
    alive: bool = True


@dataclass
class Model:
    """OTP's supervisor (supervisor.erl), reduced to what the test observes."""

    strategy: Strategy
    max_restarts: int
    max_seconds: float
    now: float
    children: list[ModelChild]
    #: Times of the restarts still in the window (OTP's ``#state.restarts``).
    restarts: list[float] = field(default_factory=list)
    dead: bool = False
    #: The events the current step should publish, in order.
    events: list[Event] = field(default_factory=list)

    def ids(self, *, alive: bool | None = None) -> list[str]:
        return [c.id for c in self.children if alive is None or c.alive == alive]

    def find(self, child_id: str) -> ModelChild:
        (child,) = (c for c in self.children if c.id == child_id)
        return child

    def _start(self, child: ModelChild) -> None:
        child.alive = True
        self.events.append(("started", child.id, child.generation))

    def _stop(self, child: ModelChild) -> None:
        if child.alive:
            child.alive = False
            self.events.append(("terminated", child.id))

    def add(self, child_id: str, restart: Restart) -> None:
        child = ModelChild(child_id, restart)
        self.children.append(child)
        self._start(child)

    def add_failed(self, child_id: str) -> None:
        # The spec is not kept; no restart is counted.
        self.events.append(("start_failed", child_id, 0))

    def terminate(self, child_id: str) -> None:
        # Not a restart, and no strategy: only this child stops.
        child = self.find(child_id)
        self._stop(child)
        if child.restart == "temporary":
            self.children.remove(child)

    def restart_child(self, child_id: str) -> None:
        child = self.find(child_id)
        child.generation += 1
        self._start(child)

    def delete(self, child_id: str) -> None:
        self.children.remove(self.find(child_id))

    def add_restart(self) -> bool:
        """OTP's ``add_restart``: keep the restarts at or after now - period, add now."""
        threshold = self.now - self.max_seconds
        self.restarts = [t for t in self.restarts if t >= threshold]
        self.restarts.append(self.now)
        return len(self.restarts) <= self.max_restarts

    def exited(self, child_id: str, *, abnormal: bool) -> None:
        """A child exited on its own (not stopped by the supervisor)."""
        child = self.find(child_id)
        child.alive = False
        wanted = child.restart == "permanent" or (child.restart == "transient" and abnormal)
        exceeded = wanted and not self.add_restart()
        # The event's ``restarting``: a restart follows (wanted, and the intensity allows it).
        self.events.append(("exited", child_id, wanted and not exceeded))
        if not wanted:
            if child.restart == "temporary":
                self.children.remove(child)
            return
        if exceeded:
            # Stop every child in reverse start order and exit.
            self.dead = True
            self.events.append(("intensity",))
            for other in reversed(self.children):
                self._stop(other)
            return
        index = self.children.index(child)
        if self.strategy == "one_for_one":
            group = [child]
        elif self.strategy == "one_for_all":
            group = list(self.children)
        else:
            group = self.children[index:]
        # The siblings stop in reverse order; then all restart in order (also those
        # that were not running, as OTP's start_children does), one restart in all.
        # Temporary siblings are removed instead.
        for other in reversed(group):
            if other is not child:
                self._stop(other)
        for other in group:
            if other is not child and other.restart == "temporary":
                self.children.remove(other)
                continue
            other.generation += 1
            self._start(other)


def note_coverage(model: Model) -> None:
    """Label what the step exercised (``--hypothesis-show-statistics`` counts them)."""
    exits = [e for e in model.events if e[0] == "exited"]
    if ("intensity",) in model.events:
        event("max restart intensity reached")
    elif exits and exits[0][2]:
        restarted = {e[1] for e in model.events if e[0] == "started"}
        stopped = {e[1] for e in model.events if e[0] == "terminated"}
        kind = "with siblings" if len(restarted) > 1 else "alone"
        event(f"{model.strategy}: restart {kind}")
        if restarted - stopped - {exits[0][1]}:
            event(f"{model.strategy}: a sibling that was not running was started")
        if stopped - restarted:
            event(f"{model.strategy}: a temporary sibling was removed")


# -- the real thing --------------------------------------------------------------------


def describe(published: SupervisorEvent) -> Event:
    """Reduce a supervisor event to the model's form."""
    if isinstance(published, ChildStarted):
        return ("started", published.child_id, published.generation)
    if isinstance(published, ChildExited):
        return ("exited", published.child_id, published.restarting)
    if isinstance(published, ChildTerminated):
        return ("terminated", published.child_id)
    if isinstance(published, ChildStartFailed):
        return ("start_failed", published.child_id, published.generation)
    assert isinstance(published, RestartIntensityReached)
    return ("intensity",)


@dataclass(frozen=True)
class Snapshot:
    """The supervisor as seen after a step (read in its event loop)."""

    alive: bool
    exit_reason: ExitReason | None
    children: list[ChildInfo]
    counts: ChildCounts
    events: list[Event]
    now: float
    #: ids of every live instance the test has ever seen.
    live: set[int]


class SupervisorMachine(RuleBasedStateMachine):
    """Drives one Supervisor per example; subclasses pick the backend."""

    backend: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.clock = MockClock(autojump_threshold=HANG_GUARD) if self.backend == "trio" else None
        self._stack = contextlib.ExitStack()
        options = {"clock": self.clock} if self.clock is not None else None
        self.portal = self._stack.enter_context(
            anyio.from_thread.start_blocking_portal(self.backend, backend_options=options)
        )
        self._sup: SupervisorRef | None = None
        self._events: MemoryObjectReceiveStream[SupervisorEvent] | None = None
        self._model: Model | None = None
        #: The instance each child had at the last check.
        self.current: dict[str, ServerRef[Any, Any]] = {}
        #: Every instance seen and not yet seen dead, by ref id.
        self.seen: dict[int, ServerRef[Any, Any]] = {}
        self.next_id = 0
        #: Ids no child holds any more (removed or never added): they may be reused.
        self.free_ids: list[str] = []

    def teardown(self) -> None:
        # Closes the event stream, stops the supervisor's tree, ends the portal's
        # thread; each even if the one before failed.
        self._stack.close()

    @property
    def sup(self) -> SupervisorRef:
        assert self._sup is not None
        return self._sup

    @property
    def model(self) -> Model:
        assert self._model is not None
        return self._model

    @property
    def running(self) -> bool:
        return self._model is not None and not self._model.dead

    # -- helpers run in the event loop --------------------------------------------------

    async def _settle(self) -> None:
        # Every exit the supervisor was told of is handled (restarts done); it may
        # have exited doing so (the invariant decides whether it should have).
        with contextlib.suppress(ServerExited):
            await self.sup.wait_stable(timeout=STEP_TIMEOUT)

    def _ref_of(self, child_id: str) -> ServerRef[Any, Any]:
        ref = self.sup.child(child_id)
        assert ref is not None, f"{child_id!r} should be running"
        return ref

    async def _kill(self, child_id: str) -> ExitReason:
        ref = self._ref_of(child_id)
        async with monitor(ref) as mon:
            await ref.kill()
            with anyio.fail_after(STEP_TIMEOUT):
                reason = await mon.down()
        await self._settle()
        return reason

    async def _tell_to_exit(self, child_id: str, how: str) -> ExitReason:
        ref = self._ref_of(child_id)
        async with monitor(ref) as mon:
            ref.cast(how)
            with anyio.fail_after(STEP_TIMEOUT):
                reason = await mon.down()
        await self._settle()
        return reason

    async def _start_child(self, spec: ChildSpec) -> ServerRef[Any, Any]:
        try:
            return await self.sup.start_child(spec, timeout=STEP_TIMEOUT)
        finally:
            await self._settle()

    async def _terminate(self, child_id: str) -> None:
        await self.sup.terminate_child(child_id, timeout=STEP_TIMEOUT)
        await self._settle()

    async def _restart(self, child_id: str) -> ServerRef[Any, Any]:
        ref = await self.sup.restart_child(child_id, timeout=STEP_TIMEOUT)
        await self._settle()
        return ref

    async def _delete(self, child_id: str) -> None:
        await self.sup.delete_child(child_id, timeout=STEP_TIMEOUT)
        await self._settle()

    def _jump(self, seconds: float) -> None:
        assert self.clock is not None
        self.clock.jump(seconds)

    def _close_events(self) -> None:
        if self._events is not None:
            self._events.close()

    def _snapshot(self) -> Snapshot:
        sup = self.sup
        assert self._events is not None
        events: list[Event] = []
        while True:
            try:
                events.append(describe(self._events.receive_nowait()))
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
        children = sup.which_children()
        for info in children:
            if info.ref is not None:
                self.seen[info.ref.id] = info.ref
        for ref_id, ref in list(self.seen.items()):
            if not ref.alive:
                del self.seen[ref_id]
        return Snapshot(
            sup.alive,
            sup.exit_reason,
            children,
            sup.count_children(),
            events,
            anyio.current_time(),
            set(self.seen),
        )

    # -- ids ----------------------------------------------------------------------------

    def _draw_new_id(self, data: st.DataObject) -> str:
        fresh = f"c{self.next_id}"
        child_id = data.draw(st.sampled_from([fresh, *self.free_ids]), label="new id")
        if child_id == fresh:
            self.next_id += 1
        else:
            self.free_ids.remove(child_id)
        return child_id

    # -- steps --------------------------------------------------------------------------

    @initialize(
        strategy=st.sampled_from(STRATEGIES),
        restarts=st.lists(st.sampled_from(RESTARTS), max_size=4),
        max_restarts=st.integers(0, 4),
        max_seconds=st.sampled_from(MOCK_WINDOWS),
    )
    def start_supervisor(
        self, strategy: Strategy, restarts: list[Restart], max_restarts: int, max_seconds: float
    ) -> None:
        window = max_seconds if self.clock is not None else REAL_CLOCK_WINDOW
        ids = [f"c{i}" for i in range(len(restarts))]
        self.next_id = len(restarts)
        spec = SupervisorSpec(
            children=[ChildSpec(i, Worker, restart=r) for i, r in zip(ids, restarts, strict=True)],
            strategy=strategy,
            max_restarts=max_restarts,
            max_seconds=window,
        )
        # Registered first so it runs last: the reader outlives the tree (the
        # supervisor closes its end on exit).
        self._stack.callback(self.portal.call, self._close_events)
        self._sup = self._stack.enter_context(
            self.portal.wrap_async_context_manager(Supervisor.running(spec))
        )
        self._events = self.portal.call(self.sup.subscribe)
        self._model = Model(
            strategy,
            max_restarts,
            window,
            self.portal.call(anyio.current_time),
            [ModelChild(i, r) for i, r in zip(ids, restarts, strict=True)],
        )

    @precondition(lambda self: self.running and self.model.ids(alive=True))
    @rule(data=st.data())
    def kill_child(self, data: st.DataObject) -> None:
        child_id = data.draw(st.sampled_from(self.model.ids(alive=True)), label="child")
        reason = self.portal.call(self._kill, child_id)
        assert reason_matches("kill", reason), reason
        self.model.exited(child_id, abnormal=True)

    @precondition(lambda self: self.running and self.model.ids(alive=True))
    @rule(data=st.data(), how=st.sampled_from(["normal", "shutdown"]))
    def child_exits_normally(self, data: st.DataObject, how: str) -> None:
        child_id = data.draw(st.sampled_from(self.model.ids(alive=True)), label="child")
        reason = self.portal.call(self._tell_to_exit, child_id, how)
        assert reason_matches(how, reason), reason
        self.model.exited(child_id, abnormal=ABNORMAL[how])

    @precondition(lambda self: self.running and self.model.ids(alive=True))
    @rule(data=st.data(), how=st.sampled_from(["crash", "stop_error"]))
    def child_crashes(self, data: st.DataObject, how: str) -> None:
        child_id = data.draw(st.sampled_from(self.model.ids(alive=True)), label="child")
        reason = self.portal.call(self._tell_to_exit, child_id, how)
        assert reason_matches(how, reason), reason
        self.model.exited(child_id, abnormal=ABNORMAL[how])

    @precondition(lambda self: self.running and len(self.model.children) < MAX_CHILDREN)
    @rule(data=st.data(), restart=st.sampled_from(RESTARTS))
    def add_child(self, data: st.DataObject, restart: Restart) -> None:
        child_id = self._draw_new_id(data)
        ref = self.portal.call(self._start_child, ChildSpec(child_id, Worker, restart=restart))
        assert ref.generation == 0
        self.model.add(child_id, restart)

    @precondition(lambda self: self.running)
    @rule(data=st.data(), restart=st.sampled_from(RESTARTS))
    def add_child_whose_init_fails(self, data: st.DataObject, restart: Restart) -> None:
        child_id = self._draw_new_id(data)
        spec = ChildSpec(child_id, Worker, arg="fail", restart=restart)
        with pytest.raises(ChildStartError) as info:
            self.portal.call(self._start_child, spec)
        assert isinstance(info.value.cause, Boom)
        self.model.add_failed(child_id)
        self.free_ids.append(child_id)

    @precondition(lambda self: self.running and self.model.children)
    @rule(data=st.data())
    def terminate_child(self, data: st.DataObject) -> None:
        child_id = data.draw(st.sampled_from(self.model.ids()), label="child")
        self.portal.call(self._terminate, child_id)
        self.model.terminate(child_id)

    @precondition(lambda self: self.running and self.model.ids(alive=False))
    @rule(data=st.data())
    def restart_child(self, data: st.DataObject) -> None:
        child_id = data.draw(st.sampled_from(self.model.ids(alive=False)), label="child")
        ref = self.portal.call(self._restart, child_id)
        self.model.restart_child(child_id)
        assert ref.generation == self.model.find(child_id).generation

    @precondition(lambda self: self.running and self.model.ids(alive=False))
    @rule(data=st.data())
    def delete_child(self, data: st.DataObject) -> None:
        child_id = data.draw(st.sampled_from(self.model.ids(alive=False)), label="child")
        self.portal.call(self._delete, child_id)
        self.model.delete(child_id)

    @precondition(lambda self: self.running and self.model.children)
    @rule(data=st.data())
    def duplicate_id_is_rejected(self, data: st.DataObject) -> None:
        child_id = data.draw(st.sampled_from(self.model.ids()), label="child")
        with pytest.raises(DuplicateChild):
            self.portal.call(self._start_child, ChildSpec(child_id, Worker))

    @precondition(lambda self: self.running)
    @rule(op=st.sampled_from(["terminate", "restart", "delete"]))
    def unknown_id_is_rejected(self, op: str) -> None:
        call = {"terminate": self._terminate, "restart": self._restart, "delete": self._delete}
        with pytest.raises(ChildNotFound):
            self.portal.call(call[op], "no-such-child")

    @precondition(lambda self: self.running and self.model.ids(alive=True))
    @rule(data=st.data(), op=st.sampled_from(["restart", "delete"]))
    def running_child_cannot_be_restarted_or_deleted(self, data: st.DataObject, op: str) -> None:
        child_id = data.draw(st.sampled_from(self.model.ids(alive=True)), label="child")
        call = {"restart": self._restart, "delete": self._delete}
        with pytest.raises(ConfigError):
            self.portal.call(call[op], child_id)

    @precondition(lambda self: self.running and self.clock is not None)
    @rule(seconds=st.sampled_from(MOCK_JUMPS))
    def advance_clock(self, seconds: float) -> None:
        self.portal.call(self._jump, seconds)
        self.model.now += seconds

    @precondition(lambda self: self._model is not None and self.model.dead)
    @rule()
    def dead_supervisor_refuses_requests(self) -> None:
        # The terminal state: the supervisor is gone, so is every child.
        with pytest.raises(ServerExited):
            self.portal.call(self._start_child, ChildSpec("late", Worker))
        with pytest.raises(ServerExited):
            self.portal.call(self.sup.sync)

    # -- the check ------------------------------------------------------------------------

    @invariant()
    def supervisor_matches_model(self) -> None:
        snap = self.portal.call(self._snapshot)
        model = self.model
        assert snap.events == model.events, f"events {snap.events} != model {model.events}"
        note_coverage(model)
        model.events.clear()
        if self.clock is not None:
            assert snap.now == model.now, "the MockClock moved by itself: a step hung"
        if model.dead:
            assert not snap.alive, "the supervisor should have reached max restart intensity"
            reason = snap.exit_reason
            error = intensity_error(reason)
            assert (error.max_restarts, error.max_seconds) == (
                model.max_restarts,
                model.max_seconds,
            )
            assert snap.counts.active == 0
            assert snap.live == set(), "children outlived their supervisor"
            return
        assert snap.alive, f"the supervisor exited: {snap.exit_reason!r}"
        assert [i.id for i in snap.children] == model.ids()
        current: set[int] = set()
        for info, child in zip(snap.children, model.children, strict=True):
            assert (info.restart, info.generation, info.alive) == (
                child.restart,
                child.generation,
                child.alive,
            ), f"{child.id}: {info} != model {child}"
            if not child.alive:
                continue
            assert info.ref is not None
            assert info.ref.generation == child.generation
            before = self.current.get(child.id)
            if before is not None and before.generation == child.generation:
                assert info.ref is before, f"{child.id} was replaced without a restart"
            else:
                assert info.ref is not before
            self.current[child.id] = info.ref
            current.add(info.ref.id)
        assert snap.live == current, "an instance outside the children list is alive"
        alive = len(model.ids(alive=True))
        specs = len(model.children)
        assert snap.counts == ChildCounts(specs=specs, active=alive, supervisors=0, workers=specs)
        # Children the model removed (temporary ones, deleted ones): their ids may
        # come back as new children.
        for child_id in [i for i in self.current if i not in model.ids()]:
            del self.current[child_id]
            self.free_ids.append(child_id)


class AsyncioSupervisorMachine(SupervisorMachine):
    backend = "asyncio"


class TrioSupervisorMachine(SupervisorMachine):
    backend = "trio"


@pytest.mark.parametrize(
    "machine",
    [AsyncioSupervisorMachine, TrioSupervisorMachine],
    ids=["asyncio", "trio-mockclock"],
)
def test_supervisor_follows_the_otp_model(machine: type[SupervisorMachine]) -> None:
    run_state_machine_as_test(machine, settings=SETTINGS)


@pytest.mark.anyio
async def test_restart_exactly_max_seconds_old_still_counts(mock_clock: MockClock) -> None:
    spec = SupervisorSpec([ChildSpec("a", Worker)], max_restarts=1, max_seconds=1.0)
    async with Supervisor.running(spec) as sup:
        first = sup.child("a")
        assert first is not None
        await first.kill()  # restart 1, at t
        await sup.wait_stable()
        mock_clock.jump(1.0)
        second = sup.child("a")
        assert second is not None
        await second.kill()  # restart 2, at t + max_seconds: 2 in the window > 1
        with contextlib.suppress(ServerExited):
            await sup.wait_stable()
        assert gave_up(sup.exit_reason)
