"""AdapterServer: one adapter served over gRPC on an address, started and stopped.

The part of ``python -m snakepit.worker`` that does not care about being a
process: ``serve()`` wraps it in signals, the ready line and exit codes, and
a host can run it in its own event loop (the pool's in-process launcher).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import socket
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from snakepit._wire._address import Address, AddressError, frames_path
from snakepit._wire._auth import SECRET_BYTES
from snakepit._wire._frames import FrameError, pack_parts, read_frame, size_buffers, write_nowait
from snakepit._wire._proto.snakepit.v1 import worker_pb2, worker_pb2_grpc

from ._adapter import Adapter
from ._auth import AuthInterceptor, Refusals, accept_frames
from ._bridge_client import HostBridge
from ._channel import FramesChannel
from ._lane import Lane, lane_enabled
from ._service import AdapterService

__all__ = ("AdapterServer",)

logger = logging.getLogger("snakepit.worker")


#: Seconds gRPC may take, at a graceful stop, to send the responses of calls that ended.
FLUSH_GRACE = 0.5

#: Exit codes: 2 for a bad command line or adapter, 3 when setup() raised,
#: 4 when the address cannot be bound.
EXIT_USAGE, EXIT_SETUP, EXIT_BIND = 2, 3, 4


class AdapterStartError(Exception):
    """The worker cannot start; ``str()`` is the one line printed on stderr."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


async def maybe_await(value: Any) -> None:
    """Await ``value`` if it is awaitable (``setup()`` and ``teardown()`` may be either)."""
    if inspect.isawaitable(value):
        await value


def parse_listen(listen: str) -> Address:
    """Read ``--listen``: ``unix:PATH`` or ``tcp:HOST:PORT``.

    A relative PATH is under the current directory.

    :raises AdapterStartError: any other form.
    """
    try:
        return Address.parse(listen)
    except AddressError as exc:
        raise AdapterStartError(f"--listen {listen!r}: {exc}") from None


def _prepare_socket(path: Path) -> None:
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o077:
        raise AdapterStartError(
            f"--listen unix:{path}: directory {directory} is open to other users "
            f"(mode {mode:o}); use a private (0700) directory",
            EXIT_BIND,
        )
    if path.is_socket():
        path.unlink()  # left by a dead worker of an earlier run


@dataclass(eq=False)
class AdapterServer:
    """An adapter instance served on one address (``snakepit.v1.WorkerService`` and health).

    ``await AdapterServer.start(adapter, listen=...)`` binds and starts
    serving; :meth:`stop` finishes the calls in flight (up to a grace
    period) and stops; :meth:`abort` stops at once, failing them.
    Started with a ``secret``, it serves only connections that prove they
    have it (see :mod:`snakepit._wire._auth`).
    """

    #: The address it serves on: ``unix:PATH`` or ``tcp:HOST:PORT``.
    address: str
    #: Where the channel's length-prefixed frames are served (``unix:PATH``;
    #: None on tcp, where the ``Channel`` RPC carries them).
    frames_address: str | None
    #: The tools' service (shared by both transports).
    _service: AdapterService = field(repr=False)
    _server: grpc.aio.Server = field(repr=False)
    _health: health_aio.HealthServicer = field(repr=False)
    _socket: Path | None = field(repr=False)
    _frames_server: asyncio.Server | None = field(default=None, repr=False)
    _frame_tasks: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)
    _secret: bytes | None = field(default=None, repr=False)
    #: Connections and calls refused for want of the secret (counted, logged).
    _refusals: Refusals = field(default_factory=Refusals, repr=False)
    #: Whether frames connections may take the fast lane (see ``_lane``).
    _fast_lane: bool = field(default=True, repr=False)

    @classmethod
    async def start(
        cls,
        adapter: Adapter,
        *,
        listen: str,
        adapter_path: str,
        worker_id: str,
        max_concurrency: int = 1,
        max_message_bytes: int = 64 * 1024 * 1024,
        allow_pickle: bool = False,
        secret: bytes | None = None,
        bridge: HostBridge | None = None,
        fast_lane: bool | None = None,
    ) -> AdapterServer:
        """Serve ``adapter`` (set up already) on ``listen`` and return once it serves.

        :param bridge: the client of the pool's bridge its tools' ``ctx.call_host`` use
            (closed with the server).

        :param fast_lane: whether a frames connection of a worker with one
            slot and no ``on_session_end`` serves its sync calls off the event
            loop (see ``snakepit.worker._lane``); None: unless the environment's
            ``SNAKEPIT_WORKER_FAST_LANE`` is ``0``.
        :param secret: what every connection must prove it has (a frames
            preface, gRPC metadata); None serves anyone who can reach the
            socket (a worker started by hand, for development).
        :raises AdapterStartError: the address is invalid or cannot be bound,
            or ``secret`` is not :data:`~snakepit._wire._auth.SECRET_BYTES` bytes.
        """
        if secret is not None and (not isinstance(secret, bytes) or len(secret) != SECRET_BYTES):
            raise AdapterStartError(f"the secret must be {SECRET_BYTES} bytes")
        address = parse_listen(listen)
        socket_path = Path(address.path) if address.kind == "unix" else None
        service = AdapterService(
            adapter,
            adapter_path=adapter_path,
            worker_id=worker_id,
            max_concurrency=max_concurrency,
            max_message_bytes=max_message_bytes,
            allow_pickle=allow_pickle,
        )
        service.bridge = bridge
        refusals = Refusals()
        server = grpc.aio.server(
            interceptors=[AuthInterceptor(secret, refusals)] if secret is not None else None,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        if socket_path is not None:
            _prepare_socket(socket_path)
        try:
            port = server.add_insecure_port(address.target)
        except RuntimeError as exc:
            service.close()
            raise AdapterStartError(f"--listen {listen!r}: cannot bind: {exc}", EXIT_BIND) from exc
        await server.start()
        if socket_path is not None:
            os.chmod(socket_path, 0o600)
        else:
            address = Address("tcp", host=address.host, port=port)
        self = cls(str(address), None, service, server, health, socket_path)
        self._secret = secret
        self._refusals = refusals
        self._fast_lane = lane_enabled() if fast_lane is None else fast_lane
        if address.frames is not None:
            frames_socket = address.frames.path
            with contextlib.suppress(FileNotFoundError):
                os.unlink(frames_socket)  # left by a dead worker of an earlier run
            try:
                self._frames_server = await asyncio.start_unix_server(
                    self._serve_frames, path=frames_socket, limit=1024 * 1024
                )
            except OSError as exc:
                await self.abort()  # the gRPC server is up already
                raise AdapterStartError(
                    f"--listen {listen!r}: cannot bind {frames_socket}: {exc}", EXIT_BIND
                ) from exc
            os.chmod(frames_socket, 0o600)
            self.frames_address = str(address.frames)
        for name in ("", "snakepit.v1.WorkerService"):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self

    async def _serve_frames(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # One connection: a FramesChannel fed by length-prefixed frames.
        task = asyncio.current_task()
        assert task is not None
        self._frame_tasks.add(task)
        limit = self._service.max_message_bytes
        size_buffers(writer.get_extra_info("socket"))

        async def write(frame: worker_pb2.ServerFrame) -> None:
            for part in pack_parts(frame):
                writer.write(part)
            await writer.drain()

        async def frames() -> AsyncIterator[worker_pb2.ClientFrame]:
            while (frame := await read_frame(reader, worker_pb2.ClientFrame, limit)) is not None:
                yield frame

        try:
            # Before anything else is read: a connection without the secret
            # is closed unanswered.
            lane = self._fast_lane and self._service.lane_eligible
            if not await accept_frames(
                reader, writer, self._secret, self._refusals, answer=not lane
            ):
                return
            if lane:
                await self._serve_lane(reader, writer)
                return
            channel = FramesChannel(
                self._service,
                write,
                write_nowait=functools.partial(write_nowait, writer),
                drain=writer.drain,
            )
            await channel.run(frames(), eof_is_gone=True)
        except (FrameError, ConnectionError) as exc:
            logger.warning("frames connection closed: %s", exc)
        except asyncio.CancelledError:
            # abort() cancels it; asyncio's server callback would log a
            # cancelled handler as an error, so it ends here, quietly.
            pass
        finally:
            self._frame_tasks.discard(task)
            writer.close()

    async def _serve_lane(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The connection leaves the loop: a dup of its socket, blocking, goes
        # to a Lane's reader thread (which answers the preface); the stream's
        # own transport stops reading and closes (the caller's finally).
        cast(asyncio.ReadTransport, writer.transport).pause_reading()
        # Nothing past the preface should be there (the host waits for the
        # answer); whatever is goes to the lane first.
        leftover = bytes(getattr(reader, "_buffer", b""))
        sock = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
        sock.setblocking(True)
        writer.close()
        lane = Lane(self._service, sock, leftover)
        self._service.add_lane(lane)
        try:
            lane.start()
            channel = FramesChannel(self._service, lane.write, write_nowait=lane.write_nowait)
            await channel.run(lane.frames(), eof_is_gone=True)
        finally:
            lane.close()
            self._service.remove_lane(lane)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let those in flight finish for up to ``grace`` seconds, stop."""
        self._service.stop_accepting()
        await self._health.enter_graceful_shutdown()
        idle = True
        started = time.monotonic()
        if self._service.in_flight or self._service.ending_sessions:
            try:
                await asyncio.wait_for(self._service.wait_idle(), grace)
            except TimeoutError:
                idle = False
                logger.warning("calls still running after %gs; cancelling them", grace)
        # A unary call counts as done when its tool returned, before grpc sent
        # its response: gRPC's own grace lets those go out (it returns as soon
        # as no RPC is left open), within what is left of ours.
        left = grace - (time.monotonic() - started)
        await self._shutdown(max(0.0, min(left, FLUSH_GRACE)) if idle else 0.0)

    async def abort(self) -> None:
        """Stop serving now: calls in flight fail, connections close. Idempotent."""
        await self._shutdown(0.0)

    async def _shutdown(self, grpc_grace: float) -> None:
        if self._frames_server is not None:
            self._frames_server.close()
            tasks = list(self._frame_tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.stop(grpc_grace)
        await self._service.aclose()
        if self._service.bridge is not None:
            await self._service.bridge.aclose()
        if self._socket is not None:
            self._socket.unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(frames_path(self._socket))
