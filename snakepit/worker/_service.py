"""The worker's gRPC service: runs tools for Execute, ExecuteStream and Channel."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import time
import traceback
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from snakepit._wire._codec import JSON, PICKLE, CodecError, decode, encode_into
from snakepit._wire._frames import ENVELOPE
from snakepit._wire._proto.snakepit.v1 import worker_pb2, worker_pb2_grpc
from snakepit._wire._session import MetadataError

from ._adapter import Adapter, ArgumentError, ToolInfo
from ._channel import FramesChannel
from ._context import Context, Session, cancel_event
from ._slots import Job, Slots, ToolRaised

if TYPE_CHECKING:
    from ._lane import Lane

__all__ = ("PROTOCOL_VERSION",)

#: The wire protocol version (the proto package is snakepit.v1).
PROTOCOL_VERSION = 1

Kind = worker_pb2.ErrorInfo.Kind
logger = logging.getLogger("snakepit.worker")


#: Bounds of an error's text on the wire: a huge message or traceback must not
#: make a reply larger than the message limit (which would break the channel).
MAX_ERROR_MESSAGE = 16 * 1024
MAX_ERROR_TRACEBACK = 64 * 1024


#: Set by a FramesChannel for its calls (tasks inherit it): a future done once
#: its client is gone. A cancelled call answers once its tool has really ended
#: (its thread returned), so that the client knows when the slot is free; with
#: nobody left to answer (the client gone, or a unary RPC that was cancelled),
#: it does not wait.
answering: contextvars.ContextVar[asyncio.Future[None] | None] = contextvars.ContextVar(
    "snakepit_answering", default=None
)


class _Deadline(Exception):
    """The request's own timeout passed in the worker (not a TimeoutError of the tool's)."""


class _Refused(Exception):
    """A request refused before its tool ran; carries the ErrorInfo kind."""

    def __init__(self, kind: worker_pb2.ErrorInfo.Kind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _bounded(text: str, limit: int, *, keep_end: bool) -> str:
    # Valid UTF-8 for protobuf (lone surrogates escaped), and at most ~limit characters.
    if len(text) > limit:
        cut = f"\n[... {len(text) - limit} characters cut ...]\n"
        text = cut + text[-limit:] if keep_end else text[:limit] + cut
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    try:
        module = cls.__module__
        return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    except BaseException:  # a class with a hostile __module__
        return cls.__name__


def error_info(
    exc: BaseException, kind: worker_pb2.ErrorInfo.Kind = Kind.REMOTE
) -> worker_pb2.ErrorInfo:
    """Describe ``exc`` for the wire: qualified type, message, formatted traceback.

    Never raises: an exception whose ``__str__`` (or its formatting) raises
    is described with what can be had; message and traceback are bounded.
    """
    if isinstance(exc, ToolRaised):  # a BaseException from a tool's thread
        exc = exc.exception
    name = _type_name(exc)
    try:
        message = str(exc)
    except BaseException as failure:
        message = f"<str() of the {name} raised {type(failure).__name__}>"
    try:
        formatted = "".join(traceback.format_exception(exc))
    except BaseException:
        try:  # the frames, without the parts that call the exception's methods
            formatted = "".join(traceback.format_tb(exc.__traceback__)) + f"{name}: {message}\n"
        except BaseException:
            formatted = ""
    return worker_pb2.ErrorInfo(
        kind=kind,
        type=_bounded(name, 1024, keep_end=False),
        message=_bounded(message, MAX_ERROR_MESSAGE, keep_end=False),
        traceback=_bounded(formatted, MAX_ERROR_TRACEBACK, keep_end=True),
    )


def cancelled_info() -> worker_pb2.ErrorInfo:
    """The reply of a call cancelled by its caller, sent once its tool really ended."""
    return worker_pb2.ErrorInfo(kind=Kind.CANCELLED, type="", message="cancelled by the caller")


def start_margin(remaining: float) -> float:
    """How long before its deadline a call still waiting to start gives up (NOT_STARTED).

    :data:`START_MARGIN`, at most a quarter of what is left (``remaining``
    seconds): its reply reaches the host before the host's own timer fires,
    so that the host knows the call did not run (and its worker is not at fault).
    """
    return min(START_MARGIN, max(remaining, 0.0) / 4)  # never past the deadline


def not_started_info(tool: str) -> worker_pb2.ErrorInfo:
    """The reply of a call whose timeout passed while it waited in the worker for a slot."""
    return _refusal(
        Kind.NOT_STARTED,
        f"{tool}: the call's timeout passed while it waited in the worker for a free slot"
        " (it was sent ahead: PoolConfig.prefetch); the tool did not run",
    )


def withdrawn_info() -> worker_pb2.ErrorInfo:
    """The reply of a call the host withdrew before it started (``ClientFrame.withdraw``)."""
    return _refusal(Kind.NOT_STARTED, "withdrawn by the host before it started; it did not run")


def _cancelling() -> bool:
    # A CancelledError is a cancellation of this task only if one was requested;
    # otherwise a tool raised it on its own, and it is that tool's error.
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _reply_codec(request: worker_pb2.ExecuteRequest) -> str:
    # Answer in the caller's codec: pickle only got this far if the worker allows it.
    return PICKLE if request.args.codec == PICKLE else JSON


def _closed(tool: str, future: asyncio.Future[Any]) -> None:
    # A generator's close() ran in its thread: it may have ignored GeneratorExit.
    if not future.cancelled() and future.exception() is not None:
        logger.warning("%s: closing the generator raised", tool, exc_info=future.exception())


def _refusal(kind: worker_pb2.ErrorInfo.Kind, message: str) -> worker_pb2.ErrorInfo:
    return worker_pb2.ErrorInfo(kind=kind, type="", message=message)


def _call_error(request: worker_pb2.ExecuteRequest, exc: BaseException) -> worker_pb2.ErrorInfo:
    # What a unary call's failure becomes on the wire (a refusal, its own
    # deadline, a codec or metadata error, or what its tool raised).
    if isinstance(exc, _Refused):
        return _refusal(exc.kind, str(exc))
    if isinstance(exc, _Deadline):
        return _refusal(Kind.DEADLINE_EXCEEDED, f"{request.tool}: the call's timeout passed")
    if isinstance(exc, CodecError):
        return error_info(exc, Kind.CODEC)
    if isinstance(exc, MetadataError):  # the tool read ctx.session.metadata, and it is not JSON
        return _refusal(Kind.INVALID_ARGUMENTS, f"{request.tool}: {exc}")
    return error_info(exc)


def _one_line(exc: BaseException) -> str:
    # "Type: message" on one line, for a log record; never raises.
    name = _type_name(exc)
    try:
        message = str(exc)
    except BaseException:
        message = "<str() raised>"
    text = f"{name}: {message}" if message else name
    return _bounded(text, MAX_ERROR_MESSAGE, keep_end=False).replace("\n", "\\n")


class _Ends:
    """The ended sessions of one id whose ``on_session_end`` has not returned yet.

    The ends are numbered 1, 2, ... in the order they came; ``ran`` of them
    have run. A call of this id that comes meanwhile waits (in ``waiters``,
    with the number of the last end queued when it came) until that end has
    run: it is then counted as running before it resumes, so that the next
    end of the id waits for it.
    """

    __slots__ = ("drained", "queued", "ran", "waiters")

    def __init__(self) -> None:
        self.queued = 0
        self.ran = 0
        self.waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        #: Set by the last call of the id to end, while its next hook waits for that.
        self.drained: asyncio.Future[None] | None = None


class Admission:
    """A session call's place among its session's ends, taken when its request was read.

    Made by :meth:`AdapterService.admit`, in the order the requests and ends
    came on the wire: a call admitted while no end of its session is pending
    counts as running at once (``waiter`` None); otherwise it waits for that
    end (``waiter``, set once the end's hook has run and the call counts as
    running). Given back once by :meth:`AdapterService.release`.
    """

    __slots__ = ("session_id", "waiter")

    def __init__(self, session_id: str, waiter: asyncio.Future[None] | None) -> None:
        self.session_id = session_id
        self.waiter = waiter


#: The admission of a call that has nothing to count (no session, or no hook).
FREE = Admission("", None)

#: A call waiting for its session's end gives up this much (at most a quarter
#: of its timeout) before its deadline: its NOT_STARTED reply then reaches the
#: host before the host's own timer (started when it sent the request) fires.
START_MARGIN = 0.05


class AdapterService(worker_pb2_grpc.WorkerServiceServicer):
    """Runs one adapter instance's tools for every RPC of ``snakepit.v1.WorkerService``.

    Sync tools and generators run in a pool of ``max_concurrency`` threads;
    async ones on the event loop. At most ``max_concurrency`` calls run at
    once; more wait in order. Results larger than ``max_message_bytes`` are
    replaced by a PAYLOAD_TOO_LARGE error, so a connection never breaks on size.
    The adapter's ``on_session_end`` runs for the ended sessions a channel
    names (:meth:`end_sessions`), in tasks this service owns until :meth:`aclose`:
    the hook of a session waits until no call of that session runs here, and a
    call of a session whose end is pending waits for its hook before its tool
    starts (so that a session id used again right after its end never loses
    its new state to the old session's hook). Calls without a session pay
    nothing for this; one with a session a dict update at its start and end.
    """

    def __init__(
        self,
        adapter: Adapter,
        *,
        adapter_path: str,
        worker_id: str,
        max_concurrency: int = 1,
        max_message_bytes: int = 64 * 1024 * 1024,
        allow_pickle: bool = False,
    ) -> None:
        self._adapter = adapter
        self._tools = type(adapter).tools
        self._adapter_path = adapter_path
        self._worker_id = worker_id
        self._max_concurrency = max_concurrency
        #: The message size limit; larger results become PAYLOAD_TOO_LARGE errors.
        self.max_message_bytes = max_message_bytes
        # The most one reply or chunk may take: a frame carries it with its
        # envelope and must stay within the limit, as the host's requests do.
        self._item_limit = max_message_bytes - ENVELOPE
        self._allow_pickle = allow_pickle
        self._loop = asyncio.get_running_loop()
        self._slots = Slots(max_concurrency, self._loop)
        self._accepting = True
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        # Adapter.on_session_end, unless the adapter keeps the default (which
        # does nothing): then an ended session costs nothing at all.
        hook = type(adapter).on_session_end
        self._session_end: Callable[[str], Any] | None = (
            None if hook is Adapter.on_session_end else adapter.on_session_end
        )
        self._session_end_async = inspect.iscoroutinefunction(hook)
        #: Whether calls of sessions are counted (:meth:`admit`): only with a
        #: hook; without one, a call's session needs no accounting at all.
        self.tracks_sessions = self._session_end is not None
        # Calls of each session running now (from the end of their wait for a
        # pending end of their session until their tool really ended).
        self._session_calls: dict[str, int] = {}
        self._ends: dict[str, _Ends] = {}  # sessions whose hook is queued or running
        self._ending = 0  # ends queued or running, all sessions
        self._end_tasks: set[asyncio.Task[None]] = set()  # one per session in _ends
        self._hook_thread: Slots | None = None  # runs sync hooks, made when first needed
        self._closed = False
        #: The worker's client of its pool's bridge (``ctx.call_host``), or None.
        self.bridge: Any = None
        self._lanes: set[Lane] = set()  # frames connections on the fast lane

    # -- lifecycle ----------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Refuse new calls (UNAVAILABLE); calls in flight go on."""
        self._accepting = False

    @property
    def in_flight(self) -> int:
        """Calls running now (the frames fast lanes' included)."""
        n = self._inflight
        for lane in self._lanes:
            n += lane.in_flight
        return n

    @property
    def lane_eligible(self) -> bool:
        """Whether a frames connection may take the fast lane for its sync calls.

        One slot (``max_concurrency=1``) and no session accounting (no
        ``on_session_end``: the ends' order stays the loop's business).
        """
        return self._max_concurrency == 1 and not self.tracks_sessions and not self._closed

    @property
    def slots(self) -> Slots:
        """The worker's concurrency slots and tool threads."""
        return self._slots

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the service runs on."""
        return self._loop

    def add_lane(self, lane: Lane) -> None:
        """Count ``lane``'s calls in flight with the service's (until :meth:`remove_lane`)."""
        self._lanes.add(lane)

    def remove_lane(self, lane: Lane) -> None:
        """Stop counting ``lane`` (its connection ended)."""
        self._lanes.discard(lane)

    @property
    def ending_sessions(self) -> int:
        """Ended sessions whose ``on_session_end`` has not returned yet."""
        return self._ending

    async def wait_idle(self) -> None:
        """Return once no call is in flight and no ``on_session_end`` is pending."""
        while True:
            await self._idle.wait()
            busy = next((lane for lane in self._lanes if lane.in_flight), None)
            if busy is not None:
                await busy.wait_idle()
                continue  # the loop's calls may have started meanwhile
            if not self._end_tasks:
                return
            await asyncio.wait(set(self._end_tasks))

    def close(self) -> None:
        """Release the tool threads and the hook thread (does not wait for a stuck one).

        Pending ``on_session_end`` calls are dropped and running ones are
        cancelled (async ones) or abandoned (a sync one, in its thread); calls
        waiting for a session's hook are refused (UNAVAILABLE). :meth:`aclose`
        also waits for the cancelled hooks to end.
        """
        self._closed = True
        for ends in self._ends.values():
            for _, waiter in ends.waiters:
                if not waiter.done():
                    waiter.set_exception(_Refused(Kind.UNAVAILABLE, "the worker is shutting down"))
        self._ends.clear()
        self._ending = 0
        for task in self._end_tasks:
            # (A task cancelled before its first step never runs its finally.)
            task.cancel()
        self._slots.close()
        if self._hook_thread is not None:
            self._hook_thread.close()

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the tasks running ``on_session_end`` have ended."""
        self.close()
        if self._end_tasks:
            await asyncio.wait(set(self._end_tasks))

    # -- ended sessions -----------------------------------------------------------------

    def end_sessions(self, session_ids: Iterable[str]) -> None:
        """Run the adapter's ``on_session_end`` for each id, in the background.

        Returns at once (the frame loop that calls it goes on reading). The
        hook of a session runs once no call of that session runs in this
        worker (a cancelled call counts until its tool really ended); the
        ends of one session id run in the order they came, those of different
        ids do not wait for each other: an ``async`` hook runs in a task of
        its own, a sync one on the service's hook thread (one after another:
        never on a tool thread, whose slot the host counts as free). What a
        hook raises is logged and forgotten. After :meth:`close` it does nothing.
        """
        if self._session_end is None or self._closed:
            return
        loop = asyncio.get_running_loop()
        for session_id in session_ids:
            self._ending += 1
            ends = self._ends.get(session_id)
            if ends is not None:
                ends.queued += 1  # its task runs it after the ones before
                continue
            ends = self._ends[session_id] = _Ends()
            ends.queued = 1
            task = loop.create_task(
                self._run_session_ends(session_id, ends), name="snakepit on_session_end"
            )
            self._end_tasks.add(task)
            task.add_done_callback(self._end_tasks.discard)

    async def _run_session_ends(self, session_id: str, ends: _Ends) -> None:
        # The ends of one session, in order (more may be queued meanwhile).
        hook = self._session_end
        assert hook is not None
        loop = asyncio.get_running_loop()
        try:
            while ends.ran < ends.queued:
                while self._session_calls.get(session_id):
                    ends.drained = loop.create_future()  # set by its last call's end
                    await ends.drained
                    ends.drained = None
                try:
                    if self._session_end_async:
                        await hook(session_id)
                    else:
                        if self._hook_thread is None:
                            self._hook_thread = Slots(1, loop, name="snakepit-session-end")
                        await self._hook_thread.run(functools.partial(hook, session_id)).future
                except BaseException as exc:
                    if isinstance(exc, asyncio.CancelledError) and _cancelling():
                        raise  # the service is closing
                    if isinstance(exc, ToolRaised):
                        exc = exc.exception
                    logger.error("on_session_end(%r) raised %s", session_id, _one_line(exc))
                if self._closed:
                    return  # a hook that ignored the cancellation: close() dropped the rest
                ends.ran += 1
                self._ending -= 1
                # The calls that came before the next end (or after the last)
                # may start now: they count as running from here on.
                waiters = ends.waiters
                calls = self._session_calls
                while waiters and waiters[0][0] <= ends.ran:
                    waiter = waiters.popleft()[1]
                    if not waiter.done():
                        waiter.set_result(None)
                        calls[session_id] = calls.get(session_id, 0) + 1
        finally:
            if self._ends.get(session_id) is ends:
                del self._ends[session_id]

    def admit(self, request: worker_pb2.ExecuteRequest) -> Admission:
        """Count a call of a session as its request is read, in the order of the wire.

        A channel admits each call when it reads it (before the ends that came
        after it in the wire are read), a unary RPC when it starts. With no end
        of the call's session pending, the call counts as running from now
        (the session's next end waits for it); otherwise it is queued behind
        the last end queued now, and its tool starts once that end's hook ran.
        Calls without a session (or an adapter without ``on_session_end``) get
        :data:`FREE`, which costs nothing. Every admission is given back once,
        by :meth:`release`.
        """
        session_id = request.session_id
        if not session_id or not self.tracks_sessions:
            return FREE
        ends = self._ends.get(session_id)
        if ends is None:
            calls = self._session_calls
            calls[session_id] = calls.get(session_id, 0) + 1
            return Admission(session_id, None)
        waiter: asyncio.Future[None] = self._loop.create_future()
        ends.waiters.append((ends.queued, waiter))
        return Admission(session_id, waiter)

    def release(self, admission: Admission) -> None:
        """Give an admission back: its call ended (its tool really has) or never started."""
        session_id = admission.session_id
        if not session_id:
            return
        waiter = admission.waiter
        if waiter is None or (
            waiter.done() and not waiter.cancelled() and waiter.exception() is None
        ):
            self._leave(session_id)  # it counted as running
        else:
            waiter.cancel()  # still waiting: the end's task skips it

    async def _turn(self, waiter: asyncio.Future[None], ctx: Context, tool: str) -> None:
        # Wait until the session's end the call was admitted behind has run.
        remaining = ctx.time_remaining()
        if remaining is not None:
            remaining -= start_margin(remaining)
        try:
            async with asyncio.timeout(remaining):
                await waiter
        except TimeoutError:
            raise _Refused(
                Kind.NOT_STARTED,
                f"{tool}: the call's timeout passed while it waited for its session's"
                " previous end (on_session_end); the tool did not run",
            ) from None

    def _leave(self, session_id: str) -> None:
        # A call of the session ended (its tool really has).
        calls = self._session_calls
        n = calls[session_id] - 1
        if n:
            calls[session_id] = n
            return
        del calls[session_id]
        ends = self._ends.get(session_id)
        if ends is not None and ends.drained is not None and not ends.drained.done():
            ends.drained.set_result(None)  # its hook may run

    def slot_state(self) -> dict[str, int]:
        """Slots of this worker now: size, free, waiting (and waited so far), calls in flight."""
        return {
            "size": self._max_concurrency,
            "free": self._slots.free,
            "waiting": self._slots.waiting,
            "waited": self._slots.waited,
            "in_flight": self.in_flight,
        }

    # -- one call -------------------------------------------------------------------

    def _prepare(
        self, request: worker_pb2.ExecuteRequest, streaming: bool
    ) -> tuple[ToolInfo, dict[str, Any], Context]:
        if not self._accepting:
            raise _Refused(Kind.UNAVAILABLE, "the worker is shutting down")
        info = self._tools.get(request.tool)
        if info is None:
            known = ", ".join(sorted(self._tools)) or "none"
            raise _Refused(Kind.TOOL_NOT_FOUND, f"no tool {request.tool!r} (tools: {known})")
        if info.streaming != streaming:
            how = "stream()" if info.streaming else "execute()"
            raise _Refused(
                Kind.INVALID_ARGUMENTS,
                f"{info.name} is {'' if info.streaming else 'not '}"
                f"a streaming tool: call it with {how}",
            )
        try:
            args = (
                decode(request.args, allow_pickle=self._allow_pickle)
                if request.HasField("args")
                else {}
            )
        except CodecError as exc:
            raise _Refused(Kind.CODEC, f"cannot decode the arguments: {exc}") from exc
        try:
            kwargs = info.bind(args)
        except ArgumentError as exc:
            raise _Refused(Kind.INVALID_ARGUMENTS, str(exc)) from exc
        timeout = request.timeout
        session_id = request.session_id
        ctx = Context(
            request_id=request.request_id,
            session_id=session_id,
            deadline=time.monotonic() + timeout if timeout > 0 else None,
            logger=info.logger,
            cancel_event=cancel_event(),
            _service=self,
            _session=Session(session_id, request.session_metadata) if session_id else None,
            _bridge=self.bridge,
            _loop=self._loop,
        )
        if info.wants_ctx:
            kwargs = {**kwargs, "ctx": ctx}
        return info, kwargs, ctx

    def _begin(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _end(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def execute(
        self,
        request: worker_pb2.ExecuteRequest,
        admission: Admission | None = None,
        started: Callable[[], object] | None = None,
    ) -> worker_pb2.ExecuteResponse:
        """Run a unary tool call; every outcome becomes a response, never an RPC error.

        Whatever the tool raises (``SystemExit``, ``KeyboardInterrupt`` and
        ``CancelledError`` included) is its error, reported as a REMOTE error
        naming the type; the worker goes on serving. Only a cancellation of
        the call itself propagates, once the tool has really ended.

        :param admission: the call's :meth:`admit` (taken when its request was
            read, released here); None: admitted now.
        :param started: called once the call has its slot, just before its
            tool runs (on the tool's thread for a sync tool): the frames
            channel marks its started page there. If it returns False (the
            host withdrew the call first), the tool does not run.
        """
        if admission is None:
            admission = self.admit(request)
        response = worker_pb2.ExecuteResponse(request_id=request.request_id)
        self._begin()
        try:
            try:
                info, kwargs, ctx = self._prepare(request, streaming=False)
            except BaseException:
                self.release(admission)
                raise
            result = await self._call(info, kwargs, ctx, admission, started)
            self._encode_result(response, request, info.name, result)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and _cancelling():
                raise  # this call is cancelled (its tool has ended by now)
            response.error.CopyFrom(_call_error(request, exc))
        finally:
            self._end()
        return response

    # -- the frames fast lane (see _lane) -------------------------------------------------

    def lane_takes(self, request: worker_pb2.ExecuteRequest) -> bool:
        """Whether the fast lane runs this unary request: all but an async tool's.

        (An unknown tool, or a streaming one called unary, is refused there.)
        """
        info = self._tools.get(request.tool)
        return info is None or info.kind != "async"

    def lane_prepare(
        self, request: worker_pb2.ExecuteRequest
    ) -> tuple[str, Callable[[], Any], Context]:
        """A sync unary call ready to run: its tool's name, the call, its context.

        :raises Exception: why it is refused; :meth:`lane_error` makes its reply.
        """
        info, kwargs, ctx = self._prepare(request, streaming=False)
        return info.name, functools.partial(getattr(self._adapter, info.attr), **kwargs), ctx

    def lane_result(
        self,
        response: worker_pb2.ExecuteResponse,
        request: worker_pb2.ExecuteRequest,
        name: str,
        result: Any,
    ) -> None:
        """Fill ``response`` (its request id set) with a sync tool's result, as :meth:`execute`."""
        try:
            self._encode_result(response, request, name, result)
        except BaseException as exc:  # on a tool thread: nothing to cancel here
            response.error.CopyFrom(_call_error(request, exc))

    def _encode_result(
        self,
        response: worker_pb2.ExecuteResponse,
        request: worker_pb2.ExecuteRequest,
        name: str,
        result: Any,
    ) -> None:
        # The result in the request's codec; an error instead if it is over the limit.
        encode_into(response.result, result, codec=_reply_codec(request))
        size = response.ByteSize()
        if size > self._item_limit:
            response.error.CopyFrom(
                _refusal(
                    Kind.PAYLOAD_TOO_LARGE,
                    f"{name}: the result is {size} bytes, over the "
                    f"{self.max_message_bytes}-byte message limit",
                )
            )

    @staticmethod
    def lane_error(
        request: worker_pb2.ExecuteRequest, exc: BaseException, *, deadline: bool = False
    ) -> worker_pb2.ErrorInfo:
        """The error reply :meth:`execute` gives for ``exc`` (``deadline``: its timeout passed)."""
        return _call_error(request, _Deadline() if deadline else exc)

    async def _call(
        self,
        info: ToolInfo,
        kwargs: dict[str, Any],
        ctx: Context,
        admission: Admission,
        started: Callable[[], object] | None,
    ) -> Any:
        func = getattr(self._adapter, info.attr)
        slots = self._slots
        job = None
        deadline = asyncio.timeout(ctx.time_remaining())
        try:
            if admission.waiter is not None:  # its session's pending end first
                await self._turn(admission.waiter, ctx, info.name)
            async with deadline:
                if info.kind != "async":
                    # The slot is taken and given back on the tool thread.
                    job = slots.call(functools.partial(func, **kwargs), ctx.cancel_event, started)
                    if job.queued and ctx.deadline is not None:
                        await self._start_in_time(job, ctx, info.name)
                    return await job.future
                if not slots.free and ctx.deadline is not None:
                    await self._acquire_in_time(ctx, info.name)
                else:
                    await slots.acquire()
                try:
                    if started is not None and started() is False:  # withdrawn meanwhile
                        raise _Refused(Kind.NOT_STARTED, withdrawn_info().message)
                    return await func(**kwargs)
                finally:
                    slots.release()
        except (asyncio.CancelledError, TimeoutError) as exc:
            ctx.cancel_event.set()  # a sync tool sees it; an async one is already cancelled
            if job is not None:
                # No reply before the tool really ended: until its thread
                # returns, the worker's slot is taken.
                await self._until_ended(job)
            if isinstance(exc, TimeoutError) and deadline.expired():
                raise _Deadline() from None
            raise
        finally:
            if job is None or job.returned:
                self.release(admission)
            else:  # its thread runs on: the session's call has not ended
                slots.when_ended(job, functools.partial(self.release, admission))

    async def stream(
        self,
        request: worker_pb2.ExecuteRequest,
        admission: Admission | None = None,
        started: Callable[[], object] | None = None,
    ) -> AsyncIterator[worker_pb2.StreamChunk]:
        """Run a streaming tool: chunks in order, then ``end`` or one ``error`` chunk.

        :param admission, started: as in :meth:`execute`.
        """
        if admission is None:
            admission = self.admit(request)
        rid = request.request_id
        # A generator's thread job that outlived the stream (for a session call).
        left: list[Job] | None = None if admission is FREE else []
        self._begin()
        try:
            try:
                info, kwargs, ctx = self._prepare(request, streaming=True)
                if admission.waiter is not None:  # its session's pending end first
                    await self._turn(admission.waiter, ctx, info.name)
            except _Refused as exc:
                yield worker_pb2.StreamChunk(request_id=rid, error=_refusal(exc.kind, str(exc)))
                return
            await self._slots.acquire()
            if started is not None:
                started()
            error: worker_pb2.ErrorInfo | None = None
            try:
                # Closed here, not left to the garbage collector: the slot is
                # given back once the tool's generator has really ended.
                async with contextlib.aclosing(self._items(info, kwargs, ctx, left)) as items:
                    async for item in items:
                        chunk = worker_pb2.StreamChunk(request_id=rid)
                        encode_into(chunk.chunk, item, codec=_reply_codec(request))
                        if chunk.ByteSize() > self._item_limit:
                            raise _Refused(
                                Kind.PAYLOAD_TOO_LARGE,
                                f"{info.name}: a chunk is {chunk.ByteSize()} bytes, over the "
                                f"{self.max_message_bytes}-byte message limit",
                            )
                        yield chunk
            except _Refused as exc:
                error = _refusal(exc.kind, str(exc))
            except CodecError as exc:
                error = error_info(exc, Kind.CODEC)
            except MetadataError as exc:
                error = _refusal(Kind.INVALID_ARGUMENTS, f"{info.name}: {exc}")
            except Exception as exc:
                error = error_info(exc)
            except BaseException as exc:
                ctx.cancel_event.set()
                if isinstance(exc, GeneratorExit) or (
                    isinstance(exc, asyncio.CancelledError) and _cancelling()
                ):
                    raise  # cancelled or closed: the generator has ended by now
                error = error_info(exc)  # the tool's own BaseException
            finally:
                self._slots.release()
            if error is not None:
                yield worker_pb2.StreamChunk(request_id=rid, error=error)
                return
            yield worker_pb2.StreamChunk(request_id=rid, end=True)
        finally:
            if not left:
                self.release(admission)
            else:  # its thread runs on: the session's call has not ended
                self._slots.when_ended(left[-1], functools.partial(self.release, admission))
            self._end()

    async def _items(
        self, info: ToolInfo, kwargs: dict[str, Any], ctx: Context, left: list[Job] | None
    ) -> AsyncGenerator[Any, None]:
        func = getattr(self._adapter, info.attr)
        if info.kind == "async_generator":
            agen = func(**kwargs)
            try:
                async for item in agen:
                    yield item
                    # A generator that never awaits would hold the loop to its
                    # end: no chunk written, no cancel or other call read.
                    await asyncio.sleep(0)
            finally:
                ctx.cancel_event.set()
                try:
                    await agen.aclose()
                except Exception:  # it ignored GeneratorExit, or its cleanup raised
                    logger.warning("%s: closing the generator raised", info.name, exc_info=True)
            return
        slots = self._slots
        run = slots.run  # this stream holds a slot already
        # Calling a generator function runs none of its code: no thread needed.
        gen: Generator[Any, None, None] = func(**kwargs)
        done = object()
        step = None
        try:
            while True:
                step = run(functools.partial(next, gen, done))
                item = await step.future
                if item is done:
                    return
                yield item
        finally:
            ctx.cancel_event.set()
            # The stream ends once the generator has: a step still running in
            # its thread (the caller cancelled), then its close().
            last = step
            try:
                if step is not None:
                    await self._until_ended(step)
                if inspect.getgeneratorstate(gen) == inspect.GEN_SUSPENDED:
                    last = closing = run(gen.close)
                    closing.future.add_done_callback(functools.partial(_closed, info.name))
                    await self._until_ended(closing)
            finally:
                if left is not None and last is not None and not last.returned:
                    left.append(last)  # not waited for: nobody is left to answer

    async def _start_in_time(self, job: Job, ctx: Context, tool: str) -> None:
        # A sync call waiting for a slot (sent ahead): if it has not started
        # by its deadline less the start margin, it is withdrawn, NOT_STARTED.
        remaining = ctx.time_remaining() or 0.0
        try:
            await asyncio.wait_for(asyncio.shield(job.future), remaining - start_margin(remaining))
        except TimeoutError:
            if self._slots.withdraw(job):
                raise _Refused(Kind.NOT_STARTED, not_started_info(tool).message) from None
        except asyncio.CancelledError:
            job.future.cancel()  # as when awaited directly: a job still queued is withdrawn
            raise
        except Exception:
            pass

    async def _acquire_in_time(self, ctx: Context, tool: str) -> None:
        # An async call waiting for a slot: as _start_in_time.
        remaining = ctx.time_remaining() or 0.0
        try:
            async with asyncio.timeout(remaining - start_margin(remaining)):
                await self._slots.acquire()
        except TimeoutError:
            raise _Refused(Kind.NOT_STARTED, not_started_info(tool).message) from None

    async def _until_ended(self, job: Job) -> None:
        # Wait for a tool thread's end, while somebody waits for the answer.
        if job.returned:
            return
        gone = answering.get()
        if gone is None or gone.done():
            return  # nobody to answer: the thread runs on, its slot taken until it returns
        finished = asyncio.ensure_future(self._slots.finished(job))
        cancelled = False
        try:
            while not (finished.done() or gone.done()):
                try:
                    await asyncio.wait((finished, gone), return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    # Cancelled again (the caller's cancel came after our own
                    # deadline): the tool still runs, and its reply waits for it.
                    cancelled = True
        finally:
            finished.cancel()
            await asyncio.wait((finished,))  # ended, not just asked to: no task outlives us
        if cancelled:
            raise asyncio.CancelledError

    # -- RPCs --------------------------------------------------------------------------

    async def Execute(
        self, request: worker_pb2.ExecuteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> worker_pb2.ExecuteResponse:
        """Unary call of one tool."""
        return await self.execute(request)

    async def ExecuteStream(
        self, request: worker_pb2.ExecuteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[worker_pb2.StreamChunk]:
        """Server-streaming call of one streaming tool."""
        async for chunk in self.stream(request):
            yield chunk

    async def Describe(
        self, request: worker_pb2.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> worker_pb2.DescribeResponse:
        """The adapter's tools."""
        return self.describe()

    def describe(self) -> worker_pb2.DescribeResponse:
        """Build the Describe response from the adapter's tool specs."""
        response = worker_pb2.DescribeResponse(
            adapter=self._adapter_path,
            protocol_version=PROTOCOL_VERSION,
            worker_id=self._worker_id,
            max_concurrency=self._max_concurrency,
        )
        for info in self._tools.values():
            spec = response.tools.add(
                name=info.name, doc=info.doc, streaming=info.streaming, returns=info.returns
            )
            for p in info.params:
                spec.parameters.add(
                    name=p.name, annotation=p.annotation, required=p.required, default=p.default
                )
        return response

    async def Channel(
        self,
        request_iterator: AsyncIterator[worker_pb2.ClientFrame],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Many calls multiplexed on one stream; replies coalesced into frames.

        The end of the client's requests means the client is gone (its
        ``Multiplexer`` closed): the calls still running are cancelled and the
        RPC ends, as on the frames socket.
        """
        await FramesChannel(self, context.write).run(request_iterator, eof_is_gone=True)
