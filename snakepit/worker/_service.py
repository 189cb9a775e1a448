"""The worker's gRPC service: runs tools for Execute, ExecuteStream and Channel."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from snakepit._codec import CodecError, decode, encode_into
from snakepit._proto.snakepit.v1 import worker_pb2, worker_pb2_grpc

from ._adapter import Adapter, ArgumentError, ToolInfo
from ._context import Context

__all__ = ("PROTOCOL_VERSION",)

#: The wire protocol version (the proto package is snakepit.v1).
PROTOCOL_VERSION = 1

Kind = worker_pb2.ErrorInfo.Kind
logger = logging.getLogger("snakepit.worker")

# Room left in a message for everything but the payload (ids, field tags).
_ENVELOPE = 1024


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
        self._limit = max_message_bytes
        self._allow_pickle = allow_pickle
        self._executor = ThreadPoolExecutor(max_concurrency, thread_name_prefix="snakepit-tool")
        self._slots = asyncio.Semaphore(max_concurrency)
        self._accepting = True
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle ----------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Refuse new calls (UNAVAILABLE); calls in flight go on."""
        self._accepting = False

    async def wait_idle(self) -> None:
        """Return once no call is in flight."""
        await self._idle.wait()

    def close(self) -> None:
        """Release the tool threads (does not wait for a stuck sync tool)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

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
            logger=logging.getLogger(f"snakepit.tool.{info.name}"),
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
            async with self._slots:
                result = await self._call(info, kwargs, ctx)
            encode_into(response.result, result)
            if response.ByteSize() > self._limit:
                size = response.ByteSize()
                response.error.CopyFrom(
                    _refusal(
                        Kind.PAYLOAD_TOO_LARGE,
                        f"{info.name}: the result is {size} bytes, over the "
                        f"{self._limit}-byte message limit",
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
        remaining = ctx.time_remaining()
        try:
            if info.kind == "async":
                if remaining is None:
                    return await func(**kwargs)
                async with asyncio.timeout(remaining):
                    return await func(**kwargs)
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(self._executor, functools.partial(func, **kwargs))
            if remaining is None:
                return await asyncio.shield(work)
            return await asyncio.wait_for(asyncio.shield(work), remaining)
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
            async with self._slots:
                try:
                    async for item in self._items(info, kwargs, ctx):
                        chunk = worker_pb2.StreamChunk(request_id=rid)
                        encode_into(chunk.chunk, item)
                        if chunk.ByteSize() > self._limit:
                            raise _Refused(
                                Kind.PAYLOAD_TOO_LARGE,
                                f"{info.name}: a chunk is {chunk.ByteSize()} bytes, over the "
                                f"{self._limit}-byte message limit",
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
            finally:
                await agen.aclose()
            return
        loop = asyncio.get_running_loop()
        gen: Iterator[Any] = await loop.run_in_executor(
            self._executor, functools.partial(func, **kwargs)
        )
        done = object()
        try:
            while True:
                item = await loop.run_in_executor(self._executor, next, gen, done)
                if item is done:
                    return
                yield item
        finally:
            ctx.cancel_event.set()
            loop.run_in_executor(self._executor, gen.close)  # type: ignore[attr-defined]

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
    ) -> AsyncIterator[worker_pb2.ServerFrame]:
        """Many calls multiplexed on one stream; replies batched into frames."""
        channel = _ChannelSession(self)
        reader = asyncio.create_task(channel.read(request_iterator))
        try:
            async for frame in channel.frames():
                yield frame
        finally:
            reader.cancel()
            await channel.aclose()


class _ChannelSession:
    """One Channel stream: runs each request as a task, batches what is ready."""

    def __init__(self, service: WorkerService) -> None:
        self._service = service
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._responses: list[worker_pb2.ExecuteResponse] = []
        self._chunks: list[worker_pb2.StreamChunk] = []
        self._ready = asyncio.Event()
        self._closed = False

    async def read(self, frames: AsyncIterator[worker_pb2.ClientFrame]) -> None:
        try:
            async for frame in frames:
                for request in frame.execute:
                    self._spawn(request.request_id, self._run(request))
                for request in frame.stream:
                    self._spawn(request.request_id, self._run_stream(request))
                for rid in frame.cancel:
                    task = self._tasks.get(rid)
                    if task is not None:
                        task.cancel()
        finally:
            # The client closed its side: let the writer drain and finish.
            self._closed = True
            self._ready.set()

    def _spawn(self, rid: int, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks[rid] = task
        task.add_done_callback(functools.partial(self._forget, rid))

    def _forget(self, rid: int, _task: object) -> None:
        self._tasks.pop(rid, None)

    async def _run(self, request: worker_pb2.ExecuteRequest) -> None:
        response = await self._service.execute(request)
        self._responses.append(response)
        self._ready.set()

    async def _run_stream(self, request: worker_pb2.ExecuteRequest) -> None:
        async for chunk in self._service.stream(request):
            self._chunks.append(chunk)
            self._ready.set()

    async def frames(self) -> AsyncIterator[worker_pb2.ServerFrame]:
        limit = self._service._limit
        while True:
            await self._ready.wait()
            self._ready.clear()
            if not self._responses and not self._chunks:
                if self._closed and not self._tasks:
                    return
                continue
            responses, self._responses = self._responses, []
            chunks, self._chunks = self._chunks, []
            # Each item fits the limit (checked where it was made); frames are
            # split so that no frame exceeds it either.
            frame = worker_pb2.ServerFrame()
            size = 0
            for response in responses:
                item_size = response.ByteSize() + 8
                if size and size + item_size > limit - _ENVELOPE:
                    yield frame
                    frame, size = worker_pb2.ServerFrame(), 0
                frame.responses.append(response)
                size += item_size
            for chunk in chunks:  # in order: a stream's chunks never overtake each other
                item_size = chunk.ByteSize() + 8
                if size and size + item_size > limit - _ENVELOPE:
                    yield frame
                    frame, size = worker_pb2.ServerFrame(), 0
                frame.chunks.append(chunk)
                size += item_size
            yield frame

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
