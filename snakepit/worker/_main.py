"""``python -m snakepit.worker``: load an adapter, serve it over gRPC, report ready."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib
import inspect
import json
import logging
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from snakepit._wire._auth import SECRET_BYTES

from ._adapter import Adapter
from ._adapter_server import (
    EXIT_SETUP,
    FLUSH_GRACE,
    AdapterServer,
    AdapterStartError,
    maybe_await,
    parse_listen,
)
from ._bridge_client import HostBridge
from ._descendants import become_subreaper, kill_descendants
from ._malloc import tune_malloc
from ._service import PROTOCOL_VERSION

__all__ = ("main", "run")

logger = logging.getLogger("snakepit.worker")

_PR_SET_PDEATHSIG = 1

#: Seconds a worker whose host is gone gives its event loop to stop by itself;
#: then (a tool blocks the loop) it kills its descendants and leaves anyway.
HOST_GONE_GRACE = 0.6
#: Seconds past what a stop may take (``--grace`` for the calls, the flush, the
#: teardown's bound) that a worker given SIGTERM waits for its loop to stop.
STOP_MARGIN = 0.5
#: How long ``teardown()`` may run when the host is gone (inside HOST_GONE_GRACE).
HOST_GONE_TEARDOWN = 0.4
#: Seconds the descendants get to die (SIGKILL) before the worker exits.
KILL_TIMEOUT = 0.5


def load_adapter(spec: str) -> type[Adapter]:
    """Import ``pkg.module:Class`` and check that it is an :class:`Adapter` subclass.

    :raises AdapterStartError: naming what is wrong (format, module, class, type).
    """
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise AdapterStartError(f"--adapter {spec!r}: expected 'package.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise AdapterStartError(
            f"--adapter {spec!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in class_name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise AdapterStartError(
                f"--adapter {spec!r}: module {module_name!r} has no attribute {class_name!r}"
            )
    if not (inspect.isclass(obj) and issubclass(obj, Adapter)):
        raise AdapterStartError(
            f"--adapter {spec!r}: {class_name} is not a subclass of snakepit.worker.Adapter"
        )
    return obj


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m snakepit.worker",
        description=(
            "Serve a snakepit Adapter over gRPC; report ready with one JSON line on "
            "--ready-fd (default: stdout, which then goes to stderr, as all later output)."
        ),
    )
    parser.add_argument("--adapter", required=True, help="package.module:ClassName")
    parser.add_argument("--listen", required=True, help="unix:PATH or tcp:HOST:PORT (port 0 ok)")
    parser.add_argument("--worker-id", default="worker", help="reported in the ready line")
    parser.add_argument("--run-id", default="", help="the host's run id (orphan cleanup)")
    parser.add_argument("--max-concurrency", type=int, default=1, help="calls run at once")
    parser.add_argument(
        "--bridge",
        default="",
        help="the pool's bridge (unix:PATH); with --auth-stdin, its token follows the secret",
    )
    parser.add_argument("--parent-pid", type=int, default=0, help="exit if this pid goes away")
    parser.add_argument("--max-message-mb", type=float, default=64.0, help="gRPC message limit")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds to finish on SIGTERM")
    parser.add_argument("--allow-pickle", action="store_true", help="accept pickle payloads")
    parser.add_argument("--no-stdin-watch", action="store_true", help="do not exit on EOF of stdin")
    parser.add_argument("--ready-fd", type=int, default=-1, help="where to report ready")
    parser.add_argument(
        "--auth-stdin",
        action="store_true",
        help=(
            f"read a {SECRET_BYTES}-byte secret from stdin first and serve only "
            "connections that have it (without: anyone who can reach the socket)"
        ),
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the event loop: uvloop if importable (auto), asyncio's, or uvloop (required)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop factory for ``--loop``: auto, asyncio or uvloop.

    "auto" takes uvloop when it can be imported (``snakepit[uvloop]``), else
    asyncio's own loop.

    :raises AdapterStartError: "uvloop" and uvloop cannot be imported.
    """
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError as exc:
            if choice == "uvloop":
                raise AdapterStartError(
                    f"--loop uvloop: cannot import uvloop ({exc}); "
                    "install snakepit[uvloop] or use --loop auto"
                ) from exc
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
    return asyncio.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """The kind of event loop ``loop`` is, "uvloop" or "asyncio" (the ready line's ``loop``)."""
    return "uvloop" if type(loop).__module__.partition(".")[0] == "uvloop" else "asyncio"


def watch_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Get ``signum`` when the parent process dies (Linux), or fail if it is gone already.

    :raises AdapterStartError: the parent is not ``parent_pid`` any more.
    """
    # Checked once after prctl, for the race where the parent died before it took effect.
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            logger.warning("prctl(PR_SET_PDEATHSIG) unavailable; relying on stdin EOF")
    if parent_pid and os.getppid() != parent_pid:
        raise AdapterStartError(f"parent process {parent_pid} is already gone")


async def serve(
    args: argparse.Namespace,
    ready_fd: int,
    secret: bytes | None = None,
    bridge_token: str | None = None,
) -> int:
    """Load, set up and serve the adapter until SIGTERM or EOF on stdin; return the exit code.

    The ready report goes to ``ready_fd``, which is closed then (see :func:`_take_stdout`).
    With a ``secret`` (see :func:`read_secret`) only connections that have it are served.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reason: list[str] = []

    def request_stop(why: str) -> None:
        if not reason:
            reason.append(why)
        stop.set()

    loop.add_signal_handler(signal.SIGINT, request_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGUSR1, _dump_state)
    _Watchdog(loop, request_stop, args).start()

    adapter_cls = load_adapter(args.adapter)
    parse_listen(args.listen)  # a bad address fails before setup() runs
    if args.max_concurrency < 1:
        raise AdapterStartError(f"--max-concurrency must be >= 1, got {args.max_concurrency}")
    try:
        adapter = adapter_cls()
        await maybe_await(adapter.setup())
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        raise AdapterStartError(
            f"--adapter {args.adapter!r}: setup() raised {type(exc).__name__}: {exc}", EXIT_SETUP
        ) from exc

    server = await AdapterServer.start(
        adapter,
        listen=args.listen,
        adapter_path=args.adapter,
        worker_id=args.worker_id,
        max_concurrency=args.max_concurrency,
        max_message_bytes=int(args.max_message_mb * 1024 * 1024),
        allow_pickle=args.allow_pickle,
        secret=secret,
        bridge=(
            HostBridge(
                args.bridge,
                bridge_token,
                args.worker_id,
                int(args.max_message_mb * 1024 * 1024),
            )
            if args.bridge and bridge_token is not None
            else None
        ),
    )
    _report_ready(args, ready_fd, server.address, server.frames_address, sorted(adapter_cls.tools))

    await stop.wait()
    why = reason[0] if reason else "stop"
    host_gone = why in ("stdin closed", "parent died")
    grace = 0.0 if host_gone else args.grace
    logger.info("stopping (%s); finishing calls in flight for up to %gs", why, grace)
    await server.stop(grace)
    try:
        limit = HOST_GONE_TEARDOWN if host_gone else max(grace, 1.0)
        await asyncio.wait_for(maybe_await(adapter.teardown()), limit)
    except Exception:
        logger.exception("teardown() failed")
        return 1
    return 0


def _dump_state() -> None:
    """On SIGUSR1: write every asyncio task's and thread's stack to stderr (diagnostics)."""
    import faulthandler

    print("snakepit.worker: SIGUSR1 state dump", file=sys.stderr)
    for task in asyncio.all_tasks():
        print(f"task {task.get_name()}: {task!r}", file=sys.stderr)
        for frame in task.get_stack():
            code = frame.f_code
            print(f"  {code.co_filename}:{frame.f_lineno} in {code.co_name}", file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)


def read_secret(fd: int = 0) -> bytes:
    """Read the worker's secret: the first ``SECRET_BYTES`` bytes of ``fd``.

    Not a byte more: what follows on stdin is not ours. Called before the
    adapter is imported, so nothing it starts finds the secret there.

    :raises AdapterStartError: ``fd`` ended (or failed) before the whole secret.
    """
    data = b""
    while len(data) < SECRET_BYTES:
        try:
            chunk = os.read(fd, SECRET_BYTES - len(data))
        except BlockingIOError:
            select.select([fd], [], [])
            continue
        except OSError as exc:
            raise AdapterStartError(f"--auth-stdin: cannot read the secret: {exc}") from exc
        if not chunk:
            raise AdapterStartError(
                f"--auth-stdin: stdin ended after {len(data)} of the secret's {SECRET_BYTES} bytes"
            )
        data += chunk
    return data


def _report_ready(
    args: argparse.Namespace, fd: int, address: str, frames: str | None, tools: list[str]
) -> None:
    line = json.dumps(
        {
            "event": "ready",
            "address": address,
            "frames": frames,
            "pid": os.getpid(),
            "worker_id": args.worker_id,
            "run_id": args.run_id,
            "protocol_version": PROTOCOL_VERSION,
            "tools": tools,
            "loop": loop_name(asyncio.get_running_loop()),
        }
    )
    data = (line + "\n").encode()
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass  # the host is gone: its watchdog ends the worker
    finally:
        os.close(fd)  # EOF for the host; nothing else is ever written there


def _take_stdout(ready_fd: int) -> int:
    """Keep the ready channel private and send everything printed to stderr.

    Before anything of the adapter is imported: its banners and prints, on
    ``sys.stdout`` or fd 1, land on stderr, which the host drains and logs.
    Returns the fd to report ready on (close-on-exec: no child gets it):
    ``--ready-fd`` if given, else a copy of the original stdout.
    """
    if ready_fd < 0:
        try:
            ready_fd = os.dup(1)
        except OSError:  # started with no stdout: nobody to report to
            ready_fd = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    os.set_inheritable(ready_fd, False)
    with contextlib.suppress(OSError):
        sys.stdout.flush()
        os.dup2(2, 1)
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return ready_fd


class _Watchdog:
    """Ends the worker when its host is gone or it is told to stop, even if a tool blocks the loop.

    A thread waits for EOF on stdin, the exit of the parent process (a
    pidfd), and SIGTERM (whose handler only writes to a pipe: it runs
    between two bytecodes of whatever the main thread is doing). Each asks
    the event loop to stop; if the process is still there after a grace
    period (``HOST_GONE_GRACE`` when the host is gone, ``--grace`` plus a
    margin after SIGTERM), the loop is blocked: the worker kills its
    descendants and exits from this thread.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, request_stop: Any, args: argparse.Namespace
    ) -> None:
        self.loop = loop
        self.request_stop = request_stop
        self.parent = os.getppid()
        self.watch_stdin = not args.no_stdin_watch
        # The calls' grace, gRPC's flush, teardown() (bounded as serve() bounds it).
        self.stop_grace = args.grace + FLUSH_GRACE + max(args.grace, 1.0) + STOP_MARGIN
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.pidfd: int | None = None
        # Without pidfds: stdin EOF and the parent-death signal remain.
        with contextlib.suppress(OSError, AttributeError):
            self.pidfd = os.pidfd_open(self.parent)
        if os.getppid() != self.parent:  # it died before the pidfd was taken
            self.parent = -1

    def start(self) -> None:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        thread = threading.Thread(target=self._run, name="snakepit-watchdog", daemon=True)
        thread.start()

    def _on_sigterm(self, signum: int, frame: object) -> None:
        with contextlib.suppress(OSError):
            os.write(self.wake_w, b"T")

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        if self.pidfd is not None:
            poller.register(self.pidfd, select.POLLIN)
        if self.watch_stdin:
            poller.register(0, select.POLLIN)
        deadline: float | None = None
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
            events = poller.poll(timeout)
            if not events and deadline is not None and time.monotonic() >= deadline:
                _finish(1)  # the loop did not stop: a tool blocks it
            why = None
            for fd, _ in events:
                if fd == self.wake_r:
                    with contextlib.suppress(OSError):
                        os.read(self.wake_r, 512)
                    why = "parent died" if os.getppid() != self.parent else "SIGTERM"
                elif fd == self.pidfd:
                    poller.unregister(fd)
                    why = "parent died"
                elif fd == 0:
                    try:
                        data = os.read(0, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        poller.unregister(0)
                        why = "stdin closed"
            if why is None:
                continue
            with contextlib.suppress(RuntimeError):  # the loop is closed: exiting already
                self.loop.call_soon_threadsafe(self.request_stop, why)
            grace = self.stop_grace if why == "SIGTERM" else HOST_GONE_GRACE
            new = time.monotonic() + grace
            deadline = new if deadline is None else min(deadline, new)


def _finish(code: int) -> None:
    """Kill every descendant (other sessions too: this worker is their subreaper), exit."""
    with contextlib.suppress(Exception):
        kill_descendants(KILL_TIMEOUT)
    os._exit(code)


def run(argv: Sequence[str] | None = None) -> None:
    """Run the worker process and exit it, without waiting for stuck tool threads.

    A sync tool that never returns cannot be interrupted; once the grace
    period is over the process leaves anyway (``os._exit``) instead of
    joining that thread, so a worker whose host is gone never lingers.
    """
    code = main(argv)
    for flush in (sys.stdout.flush, sys.stderr.flush, logging.shutdown):
        with contextlib.suppress(Exception):  # a tool may have closed fd 1 or 2
            flush()
    _finish(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker until it stops; return its exit code (see :func:`run`)."""
    args = _parser().parse_args(argv)
    tune_malloc()  # before the payloads' buffers come and go
    try:
        secret = read_secret() if args.auth_stdin else None
        # The bridge's token follows the secret on stdin, as raw bytes.
        token = read_secret().hex() if args.auth_stdin and args.bridge else None
    except AdapterStartError as exc:
        print(f"snakepit.worker: {exc}", file=sys.stderr, flush=True)
        return exc.code
    ready_fd = _take_stdout(args.ready_fd)
    become_subreaper()
    if args.run_id:  # inherited by what the tools start: a sweep finds it by this
        os.environ["SNAKEPIT_RUN_ID"] = args.run_id
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{args.worker_id}] %(name)s: %(message)s",
    )
    try:
        watch_parent(args.parent_pid)
        if secret is None:
            logger.warning("no --auth-stdin: serving without authentication (development only)")
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            return runner.run(serve(args, ready_fd, secret, token))
    except AdapterStartError as exc:
        print(f"snakepit.worker: {exc}", file=sys.stderr, flush=True)
        return exc.code
