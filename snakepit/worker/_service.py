"""The worker's gRPC service: runs tools for Execute, ExecuteStream and Channel."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc

from snakepit._codec import JSON, PICKLE, CodecError, decode, encode_into
from snakepit._proto.snakepit.v1 import worker_pb2, worker_pb2_grpc

from ._adapter import Adapter, ArgumentError, ToolInfo
from ._channel import ChannelSession
from ._context import Context
from ._slots import Slots

__all__ = ("PROTOCOL_VERSION",)

#: The wire protocol version (the proto package is snakepit.v1).
PROTOCOL_VERSION = 1

Kind = worker_pb2.ErrorInfo.Kind
logger = logging.getLogger("snakepit.worker")


class _Refused(Exception):
    """A request refused before its tool ran; carries the ErrorInfo kind."""

    def __init__(self, kind: worker_pb2.ErrorInfo.Kind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def error_info(
    exc: BaseException, kind: worker_pb2.ErrorInfo.Kind = Kind.REMOTE
) -> worker_pb2.ErrorInfo:
    """Describe ``exc`` for the wire: qualified type, message, formatted traceback."""
    cls = type(exc)
    module = cls.__module__
    name = cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
    return worker_pb2.ErrorInfo(
        kind=kind,
        type=name,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )


def _reply_codec(request: worker_pb2.ExecuteRequest) -> str:
    # Answer in the caller's codec: pickle only got this far if the worker allows it.
    return PICKLE if request.args.codec == PICKLE else JSON


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    # Closing a generator that is still running in its thread raises there; nobody waits.
    if not future.cancelled():
        future.exception()


def _refusal(kind: worker_pb2.ErrorInfo.Kind, message: str) -> worker_pb2.ErrorInfo:
    return worker_pb2.ErrorInfo(kind=kind, type="", message=message)


class WorkerService(worker_pb2_grpc.WorkerServiceServicer):
    """Runs one adapter instance's tools for every RPC of ``snakepit.v1.WorkerService``.

    Sync tools and generators run in a pool of ``max_concurrency`` threads;
    async ones on the event loop. At most ``max_concurrency`` calls run at
    once; more wait in order. Results larger than ``max_message_bytes`` are
    replaced by a PAYLOAD_TOO_LARGE error, so a connection never breaks on size.
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
        self._allow_pickle = allow_pickle
        self._slots = Slots(max_concurrency, asyncio.get_running_loop())
        self._accepting = True
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle ----------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Refuse new calls (UNAVAILABLE); calls in flight go on."""
        self._accepting = False

    @property
    def in_flight(self) -> int:
        """Calls running now."""
        return self._inflight

    async def wait_idle(self) -> None:
        """Return once no call is in flight."""
        await self._idle.wait()

    def close(self) -> None:
        """Release the tool threads (does not wait for a stuck sync tool)."""
        self._slots.close()

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
        ctx = Context(
            request_id=request.request_id,
            session_id=request.session_id,
            deadline=time.monotonic() + timeout if timeout > 0 else None,
            logger=info.logger,
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

    async def execute(self, request: worker_pb2.ExecuteRequest) -> worker_pb2.ExecuteResponse:
        """Run a unary tool call; every outcome becomes a response, never an RPC error."""
        response = worker_pb2.ExecuteResponse(request_id=request.request_id)
        self._begin()
        try:
            info, kwargs, ctx = self._prepare(request, streaming=False)
            result = await self._call(info, kwargs, ctx)
            encode_into(response.result, result, codec=_reply_codec(request))
            if response.ByteSize() > self.max_message_bytes:
                size = response.ByteSize()
                response.error.CopyFrom(
                    _refusal(
                        Kind.PAYLOAD_TOO_LARGE,
                        f"{info.name}: the result is {size} bytes, over the "
                        f"{self.max_message_bytes}-byte message limit",
                    )
                )
        except _Refused as exc:
            response.error.CopyFrom(_refusal(exc.kind, str(exc)))
        except TimeoutError as exc:
            response.error.CopyFrom(error_info(exc, Kind.DEADLINE_EXCEEDED))
        except CodecError as exc:
            response.error.CopyFrom(error_info(exc, Kind.CODEC))
        except Exception as exc:
            response.error.CopyFrom(error_info(exc))
        finally:
            self._end()
        return response

    async def _call(self, info: ToolInfo, kwargs: dict[str, Any], ctx: Context) -> Any:
        func = getattr(self._adapter, info.attr)
        slots = self._slots
        try:
            async with asyncio.timeout(ctx.time_remaining()):
                if info.kind != "async":
                    # The slot is taken and given back on the tool thread.
                    return await slots.call(functools.partial(func, **kwargs), ctx.cancel_event)
                await slots.acquire()
                try:
                    return await func(**kwargs)
                finally:
                    slots.release()
        except (asyncio.CancelledError, TimeoutError):
            ctx.cancel_event.set()  # a sync tool sees it; an async one is already cancelled
            raise

    async def stream(
        self, request: worker_pb2.ExecuteRequest
    ) -> AsyncIterator[worker_pb2.StreamChunk]:
        """Run a streaming tool: chunks in order, then ``end`` or one ``error`` chunk."""
        rid = request.request_id
        self._begin()
        try:
            try:
                info, kwargs, ctx = self._prepare(request, streaming=True)
            except _Refused as exc:
                yield worker_pb2.StreamChunk(request_id=rid, error=_refusal(exc.kind, str(exc)))
                return
            await self._slots.acquire()
            try:
                try:
                    async for item in self._items(info, kwargs, ctx):
                        chunk = worker_pb2.StreamChunk(request_id=rid)
                        encode_into(chunk.chunk, item, codec=_reply_codec(request))
                        if chunk.ByteSize() > self.max_message_bytes:
                            raise _Refused(
                                Kind.PAYLOAD_TOO_LARGE,
                                f"{info.name}: a chunk is {chunk.ByteSize()} bytes, over the "
                                f"{self.max_message_bytes}-byte message limit",
                            )
                        yield chunk
                except asyncio.CancelledError:
                    ctx.cancel_event.set()
                    raise
                except _Refused as exc:
                    yield worker_pb2.StreamChunk(request_id=rid, error=_refusal(exc.kind, str(exc)))
                    return
                except CodecError as exc:
                    yield worker_pb2.StreamChunk(request_id=rid, error=error_info(exc, Kind.CODEC))
                    return
                except Exception as exc:
                    yield worker_pb2.StreamChunk(request_id=rid, error=error_info(exc))
                    return
            finally:
                self._slots.release()
            yield worker_pb2.StreamChunk(request_id=rid, end=True)
        finally:
            self._end()

    async def _items(
        self, info: ToolInfo, kwargs: dict[str, Any], ctx: Context
    ) -> AsyncIterator[Any]:
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
                await agen.aclose()
            return
        run = self._slots.run  # this stream holds a slot already
        gen: Iterator[Any] = await run(functools.partial(func, **kwargs))
        done = object()
        try:
            while True:
                item = await run(functools.partial(next, gen, done))
                if item is done:
                    return
                yield item
        finally:
            ctx.cancel_event.set()
            closing = run(gen.close)  # type: ignore[attr-defined]
            closing.add_done_callback(_ignore_outcome)

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
        """Many calls multiplexed on one stream; replies coalesced into frames."""
        await ChannelSession(self, context.write).run(request_iterator)
